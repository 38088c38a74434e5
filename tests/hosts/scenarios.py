"""What the multi-host tests and `python -m bench.partition` do to a deployment.

The partition scenario, as a machine that loses power mid-transaction shows it to
PostgreSQL: worker host `a` runs a `peer.sweep` of one pool and a `peer.request` into it,
each stopped inside its transaction (the test holds a lock each of them needs, then lets
go once the host is cut off, so PostgreSQL finishes their statements and answers a host
that is gone), and `b` stays up throughout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from sqlalchemy import Connection, text

from runtime.polling import poll_until
from tests.hosts.harness import DB_ADDRESS, WORKER_ADDRESSES, Deployment, Outcome, TaskEvents

DIFFICULTY = "Easy"
HELD_TOPIC = "held"
# Requests already waiting in the pool the cut-off sweep claims, and those that arrive
# after the cut (an even total, so the pool drains completely once it is free).
SEEDED, ARRIVING = 4, 5
# The healthy host's workload: requests in pools of their own, two per pool.
HEALTHY_REQUESTS = 20
# While the pool is held, a pair of healthy requests every this many seconds.
TRICKLE_EVERY = 2.0
# Queues the scenario's tasks travel on (celeryconfig routes).
WORK_QUEUES = ("interactive", "sweeps")


def node(host: str) -> str:
    """The Celery node name of `host`'s worker."""
    return f"worker@host-{host}"


@contextmanager
def only_on(deployment: Deployment, host: str, others: Sequence[str]) -> Iterator[None]:
    """Workers `others` stop taking the scenario's queues for the block, so `host` takes
    every task sent meanwhile."""
    control = deployment.control().control

    def consumes(worker: str, queue: str) -> bool:
        replies = control.inspect(destination=[node(worker)], timeout=2).active_queues() or {}
        return any(q["name"] == queue for q in replies.get(node(worker), []))

    def switched(worker: str, on: bool) -> bool:
        for queue in WORK_QUEUES:
            if on:
                control.add_consumer(queue, destination=[node(worker)], reply=True, timeout=2)
            else:
                control.cancel_consumer(queue, destination=[node(worker)], reply=True, timeout=2)
        return all(consumes(worker, queue) == on for queue in WORK_QUEUES)

    for other in others:
        if not poll_until(partial(switched, other, False), 30, interval=0.5):
            raise RuntimeError(f"{node(other)} did not leave {WORK_QUEUES}")
    try:
        yield
    finally:
        for other in others:
            if not poll_until(partial(switched, other, True), 30, interval=0.5):
                raise RuntimeError(f"{node(other)} did not take {WORK_QUEUES} up again")


def request_pairs(deployment: Deployment, count: int, label: str) -> list[str]:
    """`count` requests of new users, two per pool of their own; the task ids."""
    users = deployment.users(count)
    return [
        deployment.enqueue(
            "peer.request", user_id=user, difficulty=DIFFICULTY, topic=f"{label}-{i // 2}"
        )
        for i, user in enumerate(users)
    ]


@dataclass(frozen=True)
class Drain:
    """A batch of tasks, from the first accepted to the last outcome."""

    outcomes: dict[str, Outcome]

    @property
    def seconds(self) -> float:
        """First accepted to last finished."""
        ends = [o.finished for o in self.outcomes.values() if o.finished is not None]
        if len(ends) < len(self.outcomes):
            return float("inf")
        return max(ends) - min(o.accepted for o in self.outcomes.values())

    @property
    def per_second(self) -> float:
        """Tasks finished per second over the batch."""
        return len(self.outcomes) / self.seconds

    @property
    def slowest(self) -> float:
        """The longest one task waited, accepted to outcome (inf if one never ended)."""
        return max((o.seconds or float("inf")) for o in self.outcomes.values())


def drain(deployment: Deployment, label: str, timeout: float = 60) -> Drain:
    """Send the healthy workload and wait for every outcome."""
    ids = request_pairs(deployment, HEALTHY_REQUESTS, label)
    return Drain(deployment.wait_finished(ids, timeout))


def _sessions_of(
    conn: Connection,
    host: str,
    state: str | None = None,
    query_like: str = "%",
    waiting: bool = False,
) -> int:
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE client_addr = CAST(:address AS inet) "
        "AND query ILIKE :query"
    )
    if waiting:
        sql += " AND wait_event_type = 'Lock'"
    if state is not None:
        sql += " AND state = :state"
    address = DB_ADDRESS if host == "db" else WORKER_ADDRESSES[host]
    params = {"address": address, "query": query_like, "state": state}
    return int(conn.scalar(text(sql), params) or 0)


def sessions_of(
    deployment: Deployment,
    host: str,
    state: str | None = None,
    query_like: str = "%",
    waiting: bool = False,
) -> int:
    """Sessions of `host` in pg_stat_activity matching the filters."""
    with deployment.engine.connect() as conn:
        return _sessions_of(conn, host, state, query_like, waiting)


def both_waiting(deployment: Deployment) -> bool:
    """Host a's sweep waits to write its matches and its request to insert, both now."""
    with deployment.engine.connect() as conn:
        return bool(
            _sessions_of(conn, "a", query_like="%WITH pairs%", waiting=True)
            and _sessions_of(conn, "a", query_like="%INSERT INTO match_requests%", waiting=True)
        )


@dataclass
class Partition:
    """What the partition scenario measured. Times in seconds after the cut."""

    sweep: Outcome
    request: Outcome
    held_ids: list[str]
    arriving_ids: list[str]
    held_users: list[int]
    idle_in_transaction: int
    baseline: Drain
    during: Drain
    trickle: Drain
    sweeps_of_held_pool: int
    held_pool_free_after: float | None
    last_held_outcome_after: float | None
    waited: float

    def report(self) -> str:
        """The figures, one per line."""

        def seconds(value: float | None) -> str:
            return f"{value:.1f} s" if value is not None else f"none within {self.waited:.0f} s"

        return "\n".join(
            [
                "partition of a worker host mid-transaction (a sweep and a request):",
                f"  host's sessions idle in transaction after the cut: {self.idle_in_transaction}",
                f"  cut -> last held task's outcome: {seconds(self.last_held_outcome_after)}",
                f"  cut -> held pool drained (all {SEEDED + ARRIVING + 1} matched): "
                f"{seconds(self.held_pool_free_after)}",
                f"  held sweep: {self.sweep.state}, deliveries {self.sweep.deliveries}, "
                f"redispatches {self.sweep.redispatches}",
                f"  held request: {self.request.state}, deliveries {self.request.deliveries}, "
                f"redispatches {self.request.redispatches}",
                f"  sweeps of the held pool while it was held: {self.sweeps_of_held_pool}",
                f"  healthy host, {HEALTHY_REQUESTS} requests:    without partition   during",
                *(
                    f"    {label:<14}{before:>18.2f}{after:>10.2f}"
                    for label, before, after in (
                        ("drained in s", self.baseline.seconds, self.during.seconds),
                        ("per second", self.baseline.per_second, self.during.per_second),
                        ("slowest task s", self.baseline.slowest, self.during.slowest),
                    )
                ),
                f"  healthy requests sent every {TRICKLE_EVERY:g} s while the pool was held: "
                f"{len(self.trickle.outcomes)}, slowest {self.trickle.slowest:.2f} s",
            ]
        )


def held_pool_drained(deployment: Deployment, users: Sequence[int]) -> bool:
    """Every user of the held pool has a request there, matched."""
    with deployment.engine.connect() as conn:
        matched = conn.scalar(
            text(
                "SELECT count(*) FROM match_requests WHERE topic = :topic "
                "AND status = 'matched' AND user_id = ANY(:users)"
            ),
            {"topic": HELD_TOPIC, "users": list(users)},
        )
    return int(matched or 0) == len(users)


def partition(deployment: Deployment, events: TaskEvents, wait: float) -> Partition:
    """Cut host `a` off while it holds a sweep and a request; measure until both held tasks
    have an outcome and the held pool drained, or `wait` seconds after the cut."""
    with only_on(deployment, "b", ["a"]):
        baseline = drain(deployment, "baseline")
    seeded = deployment.users(SEEDED)
    (gate_user,) = deployment.users(1)
    arriving = deployment.users(ARRIVING)
    with deployment.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO match_requests (user_id, difficulty, topic) "
                "SELECT unnest(CAST(:users AS bigint[])), :difficulty, :topic"
            ),
            {"users": seeded, "difficulty": DIFFICULTY, "topic": HELD_TOPIC},
        )
    with only_on(deployment, "a", ["b"]):
        sweep_gate = deployment.engine.connect()
        request_gate = deployment.engine.connect()
        # The sweep claims the pool, then waits to write its matches.
        sweep_gate.execute(text("LOCK TABLE matches IN SHARE MODE"))
        # The request waits on the one-open-request index behind an uncommitted row.
        request_gate.execute(
            text("INSERT INTO match_requests (user_id, difficulty, topic) VALUES (:u, :d, 'gate')"),
            {"u": gate_user, "d": DIFFICULTY},
        )
        sweep_id = deployment.enqueue("peer.sweep", difficulty=DIFFICULTY, topic=HELD_TOPIC)
        request_id = deployment.enqueue(
            "peer.request", user_id=gate_user, difficulty=DIFFICULTY, topic=HELD_TOPIC
        )
        # Both at once: a wait longer than DB_LOCK_TIMEOUT_MS gives up, and the task comes
        # back to wait again a moment later.
        if not poll_until(lambda: both_waiting(deployment), 60, interval=0.05):
            raise RuntimeError("host a never had the sweep and the request waiting at once")
        deployment.network.cut("a")
        cut_at, cut_clock = deployment.now(), time.time()
        # PostgreSQL now finishes both statements and answers a host that is gone.
        request_gate.rollback()
        sweep_gate.rollback()
        request_gate.close()
        sweep_gate.close()
    poll_until(lambda: sessions_of(deployment, "a", state="idle in transaction") >= 2, 5)
    idle = sessions_of(deployment, "a", state="idle in transaction")
    arriving_ids = [
        deployment.enqueue("peer.request", user_id=user, difficulty=DIFFICULTY, topic=HELD_TOPIC)
        for user in arriving
    ]
    # After the first redispatch of the held tasks, whose copies land on the healthy host.
    time.sleep(
        max(
            0.0,
            cut_clock + float(deployment.settings["REDISPATCH_AFTER_SECONDS"]) + 1 - time.time(),
        )
    )
    during = drain(deployment, "during", timeout=wait)
    held_users = [*seeded, gate_user, *arriving]
    held_ids = [sweep_id, request_id]
    # Until the held work is done: a pair of healthy requests every TRICKLE_EVERY seconds.
    trickle: list[str] = []
    next_pair = 0.0
    while time.time() < cut_clock + wait:
        if time.time() >= next_pair:
            trickle += request_pairs(deployment, 2, f"trickle-{len(trickle)}")
            next_pair = time.time() + TRICKLE_EVERY
        if all(
            o.finished is not None for o in deployment.outcomes(held_ids).values()
        ) and held_pool_drained(deployment, held_users):
            break
        time.sleep(0.2)
    drained_clock = time.time()
    held = deployment.outcomes(held_ids)
    finished = [o.finished for o in held.values()]
    drained = held_pool_drained(deployment, held_users)
    return Partition(
        sweep=held[sweep_id],
        request=held[request_id],
        held_ids=held_ids,
        arriving_ids=arriving_ids,
        held_users=held_users,
        idle_in_transaction=idle,
        baseline=baseline,
        during=during,
        trickle=Drain(deployment.wait_finished(trickle, 30)),
        sweeps_of_held_pool=events.sweeps_of(HELD_TOPIC, cut_clock, drained_clock),
        held_pool_free_after=drained_clock - cut_clock if drained else None,
        last_held_outcome_after=(
            None if None in finished else max(f for f in finished if f is not None) - cut_at
        ),
        waited=wait,
    )


def peer_invariants(deployment: Deployment) -> list[str]:
    """Every way the peer tables could show a task that counted twice; empty when none."""
    checks = {
        "a user with two open requests": (
            "SELECT count(*) FROM (SELECT user_id FROM match_requests "
            "WHERE status IN ('pending', 'matched') GROUP BY user_id HAVING count(*) > 1) AS u"
        ),
        "a matched request outside its match": (
            "SELECT count(*) FROM match_requests r WHERE r.status = 'matched' AND NOT EXISTS "
            "(SELECT 1 FROM matches m WHERE m.id = r.match_id "
            "AND r.id IN (m.request_a, m.request_b))"
        ),
        "an open match without exactly its two requests": (
            "SELECT count(*) FROM matches m WHERE m.status = 'pending_confirmation' AND "
            "(SELECT count(*) FROM match_requests r WHERE r.match_id = m.id "
            "AND r.status = 'matched') <> 2"
        ),
        "a match of a user with themselves": "SELECT count(*) FROM matches WHERE user_a = user_b",
        "a match without exactly one match.proposed event": (
            "SELECT count(*) FROM matches m WHERE (SELECT count(*) FROM outbox o "
            "WHERE o.type = 'match.proposed' AND o.data->>'match_id' = m.id::text) <> 1"
        ),
    }
    broken = []
    with deployment.engine.connect() as conn:
        for what, sql in checks.items():
            if count := int(conn.scalar(text(sql)) or 0):
                broken.append(f"{count} times {what}")
    return broken


def requests_per_user(
    deployment: Deployment, users: Sequence[int], topic_like: str
) -> dict[int, int]:
    """How many requests each of `users` has in topics matching `topic_like`."""
    with deployment.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT u AS user_id, count(r.id) AS n FROM unnest(CAST(:users AS bigint[])) AS u "
                "LEFT JOIN match_requests r ON r.user_id = u AND r.topic LIKE :topic GROUP BY u"
            ),
            {"users": list(users), "topic": topic_like},
        )
        return {int(row.user_id): int(row.n) for row in rows}
