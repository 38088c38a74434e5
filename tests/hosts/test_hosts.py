"""matchops across hosts: a database host and two worker hosts behind a router.

Each host is a network namespace (tests/hosts/harness.py); the faults are made in the
router. The cases share one deployment, in the order written: the work spread over both
hosts, a host cut off mid-transaction, the partition healed, a slow and lossy link.
`-rP` shows the partition's figures in the report (or `python -m bench.partition`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from runtime.polling import poll_until
from tests.hosts.harness import (
    BASE_SETTINGS,
    DB_ADDRESS,
    ROUTER_SIDE,
    Deployment,
    TaskEvents,
    deployment,
    unavailable,
)
from tests.hosts.scenarios import (
    DIFFICULTY,
    HEALTHY_REQUESTS,
    Partition,
    only_on,
    partition,
    peer_invariants,
    request_pairs,
    requests_per_user,
    sessions_of,
)

if reason := unavailable():
    pytest.skip(f"no separate hosts on this machine: {reason}", allow_module_level=True)

# How long PostgreSQL keeps a silent host's transactions and locks (DB_SILENT_CLIENT_SECONDS,
# README "Scale out"). A copy that met the held lock tries again after waits that grow
# to that bound (workers.base), so the held tasks end within twice it, plus a redispatch.
SILENT_SECONDS = float(BASE_SETTINGS["DB_SILENT_CLIENT_SECONDS"])
HELD_TASKS_BOUND = 2 * SILENT_SECONDS + float(BASE_SETTINGS["REDISPATCH_AFTER_SECONDS"]) + 5
# A healthy task's normal time on this shared machine: accepted to outcome, at most
# this many times the slowest of the same batch without a partition (and a floor).
NORMAL_FACTOR, NORMAL_FLOOR = 3.0, 5.0
# PostgreSQL connections of a worker machine running `matchops worker -c N` (README,
# Scale out: connection budget): its dispatcher's, and four per pool process.
CONCURRENCY = 2
WORKER_MACHINE_CONNECTIONS = 1 + 4 * CONCURRENCY
# The database host's API (16 at most) and beat (its dispatcher's).
API_AND_BEAT_CONNECTIONS = 16 + 1
# Sweeps of the held pool while it is held: a back-off, not a loop.
MAX_SWEEPS_OF_HELD_POOL = 20


@pytest.fixture(scope="module")
def hosts() -> Iterator[Deployment]:
    """The deployment with a worker on each worker host."""
    with deployment() as built:
        built.start_worker("a", concurrency=CONCURRENCY)
        built.start_worker("b", concurrency=CONCURRENCY)
        yield built


@pytest.fixture(scope="module")
def events(hosts: Deployment) -> Iterator[TaskEvents]:
    """The workers' task events, from the first test on."""
    with hosts.events() as received:
        yield received


@pytest.fixture(scope="module")
def cut_off(hosts: Deployment, events: TaskEvents) -> Partition:
    """Host a cut off while it holds a sweep and a request, measured (still cut off)."""
    return partition(hosts, events, wait=HELD_TASKS_BOUND + 15)


def test_work_spreads_over_both_hosts_and_runs_once(hosts: Deployment, events: TaskEvents):
    started = time.time()
    users = hosts.users(100)
    outcomes = _requests_and_sweeps(hosts, users, "spread", 8, timeout=90)
    assert all(o.deliveries == 1 for o in outcomes.values())
    assert poll_until(
        lambda: set(requests_per_user(hosts, users, "spread-%").values()) == {1}, 10
    ), "each request must be recorded once"
    # 12 or 13 per pool: all paired but one in the odd pools.
    assert poll_until(lambda: _pending(hosts, "spread-%") == 4, 30), _pending(hosts, "spread-%")
    assert peer_invariants(hosts) == []
    by_host = events.done_by_host(started)
    total = sum(by_host.values())
    connections = {host: sessions_of(hosts, host) for host in ("a", "b", "db")}
    print(f"\ntasks done by host: {dict(by_host)}; PostgreSQL sessions by host: {connections}")
    assert connections["a"] <= WORKER_MACHINE_CONNECTIONS
    assert connections["b"] <= WORKER_MACHINE_CONNECTIONS
    assert connections["db"] <= API_AND_BEAT_CONNECTIONS
    assert by_host["worker@host-a"] >= total * 0.2
    assert by_host["worker@host-b"] >= total * 0.2


def test_a_host_cut_off_mid_transaction_holds_nothing_else_up(cut_off: Partition):
    figures = cut_off
    print(figures.report())
    # It really was caught mid-transaction: PostgreSQL kept its sessions open.
    assert figures.idle_in_transaction >= 2
    normal = max(NORMAL_FLOOR, NORMAL_FACTOR * figures.baseline.slowest)
    for healthy in (figures.during, figures.trickle):
        assert all(o.state == "SUCCESS" for o in healthy.outcomes.values())
        assert healthy.slowest <= normal, (
            f"a healthy task took {healthy.slowest:.1f} s during the partition "
            f"(normal: {normal:.1f} s)\n{figures.report()}"
        )
    assert figures.last_held_outcome_after is not None, figures.report()
    assert figures.last_held_outcome_after <= HELD_TASKS_BOUND, figures.report()
    assert figures.held_pool_free_after is not None, figures.report()
    assert figures.sweep.state == figures.request.state == "SUCCESS"
    assert figures.sweeps_of_held_pool <= MAX_SWEEPS_OF_HELD_POOL, figures.report()


def test_partition_healed_nothing_counts_twice_and_the_host_works_again(
    hosts: Deployment, events: TaskEvents, cut_off: Partition
):
    held_before = _ends(hosts, cut_off.held_ids)
    hosts.network.heal("a")
    healed = time.time()
    # Whatever the host still had in hand reaches the database now, or is refused.
    assert poll_until(lambda: sessions_of(hosts, "a", state="idle in transaction") == 0, 60)
    with only_on(hosts, "a", ["b"]):
        ids = request_pairs(hosts, 10, "healed")
        outcomes = hosts.wait_finished(ids, 60)
    assert all(o.state == "SUCCESS" for o in outcomes.values()), outcomes
    # Task events reach the test after the ledger does (a worker flushes them on a timer).
    assert poll_until(lambda: events.done_by_host(healed)["worker@host-a"] >= len(ids), 15), (
        events.done_by_host(healed)
    )
    # Nothing the host held counted twice.
    assert _ends(hosts, cut_off.held_ids) == held_before
    assert set(requests_per_user(hosts, cut_off.held_users, "held").values()) == {1}
    assert _pending(hosts, "held") == 0
    assert peer_invariants(hosts) == []


# A worker's first tasks on the lossy link open its connections through the loss (a lost
# SYN is sent again after 1 s, then 3 s more): its time limits leave room for that, still
# below the deployment's redispatch wait (10 s).
LOSSY_LINK_LIMITS = {"TASK_SOFT_TIME_LIMIT": "8", "TASK_TIME_LIMIT": "9"}


def test_a_slow_lossy_link_runs_every_task_once(hosts: Deployment):
    for host in ("a", "b"):
        hosts.stop_worker(host)
    for router in ROUTER_SIDE["a"], ROUTER_SIDE["b"]:
        for port, target in ((15432, f"{DB_ADDRESS}:5432"), (16379, f"{DB_ADDRESS}:6379")):
            hosts.start_relay("router", f"{router}:{port}", target, delay=0.025)
    hosts.network.lose(0.02)
    try:
        for host in ("a", "b"):
            router = ROUTER_SIDE[host]
            hosts.start_worker(
                host,
                hosts.urls(f"{router}:15432", f"{router}:16379"),
                settings=LOSSY_LINK_LIMITS,
            )
        users = hosts.users(2 * HEALTHY_REQUESTS)
        _requests_and_sweeps(hosts, users, "lossy", 4, timeout=120)
        assert set(requests_per_user(hosts, users, "lossy-%").values()) == {1}
        assert poll_until(lambda: _pending(hosts, "lossy-%") == 0, 60)
        assert peer_invariants(hosts) == []
    finally:
        hosts.network.stop_losing()


def _ends(hosts: Deployment, task_ids: list[str]) -> dict[str, tuple[str | None, float | None]]:
    return {task_id: (o.state, o.finished) for task_id, o in hosts.outcomes(task_ids).items()}


def _pending(hosts: Deployment, topic_like: str) -> int:
    with hosts.engine.connect() as conn:
        return int(
            conn.scalar(
                text(
                    "SELECT count(*) FROM match_requests WHERE status = 'pending' AND topic LIKE :t"
                ),
                {"t": topic_like},
            )
            or 0
        )


def _requests_and_sweeps(hosts: Deployment, users, prefix: str, topics: int, timeout: float):
    """A peer request of each of `users` over `topics` topics named `prefix-N`, and a sweep
    of each topic, through the API; their outcomes, every one of them SUCCESS."""
    ids = [
        hosts.enqueue(
            "peer.request", user_id=user, difficulty=DIFFICULTY, topic=f"{prefix}-{i % topics}"
        )
        for i, user in enumerate(users)
    ]
    ids += [
        hosts.enqueue("peer.sweep", difficulty=DIFFICULTY, topic=f"{prefix}-{i}")
        for i in range(topics)
    ]
    outcomes = hosts.wait_finished(ids, timeout)
    assert all(o.state == "SUCCESS" for o in outcomes.values()), [
        o for o in outcomes.values() if o.state != "SUCCESS"
    ]
    return outcomes
