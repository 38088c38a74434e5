"""Follow-ups sent after commit, coalesced, through real workers: a rolled-back request
sends nothing, a burst into one pool rides along with the sweep already queued, a sweep of every
pool fans out under a tight cap, a commit's events go out as it commits (a backlog past one
batch by the relay task), and beat's ticks store no results."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from bench.harness import bound_to_events, take_events
from core.db import session_factory
from core.followups import Followup
from core.outbox import emit_event, emit_events
from core.relay import RELAY_BATCH
from core.settings import get_settings
from domain.peer.budget import count_open_matches
from domain.peer.requests import create_request
from domain.peer.session_store import session_store
from tests.api.support import task_events
from tests.factories import make_user, unique
from tests.factories_peer import make_pool, pairs_of_topic
from tests.support import (
    WorkerProcess,
    capped_sweeper,
    queue_taken_from,
    run_task,
    running_beat,
    running_worker,
    send,
    task_run,
    unpublished_events,
    wait_for,
)
from workers.app import app
from workers.triggers import DUE_TOPICS_KEY, QUEUED_TTL_MS, queued_key

TRIGGERS_ON = {"COMMIT_TRIGGERS": "true"}


@contextmanager
def queues_taken_from(worker: WorkerProcess, *queues: str) -> Iterator[None]:
    """The session worker leaves these queues to the workers the test starts."""
    with ExitStack() as stack:
        for queue in queues:
            stack.enter_context(queue_taken_from(worker, queue))
        yield


@pytest.fixture
def triggers_here(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Commits made by this test process send their follow-ups too."""
    monkeypatch.setenv("COMMIT_TRIGGERS", "true")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_commit_sends_the_sweep_of_its_topic_and_a_rollback_sends_nothing(
    worker, triggers_here, db
):
    rolled_back, committed = unique("topic"), unique("topic")
    users = [make_user(db).id for _ in range(4)]
    db.commit()
    store = session_store()

    with (
        queues_taken_from(worker, "sweeps", "events"),
        running_worker("triggered", queues="sweeps,events", extra_env=TRIGGERS_ON),
        task_events() as seen,
    ):
        with session_factory()() as session:
            create_request(session, users[0], "Easy", rolled_back)
            create_request(session, users[1], "Easy", rolled_back)
            session.rollback()
        with session_factory().begin() as session:
            create_request(session, users[2], "Easy", committed)
            create_request(session, users[3], "Easy", committed)
            # Nothing is sent while the transaction is open: no worker can look for the
            # requests before they exist for it.
            assert not store.sismember(DUE_TOPICS_KEY, committed)
        # Nobody sends a sweep: the commit did.
        wait_for(lambda: pairs_of_topic(db, committed), what="the triggered sweep")

    assert pairs_of_topic(db, committed) == {frozenset(users[2:])}
    assert len(seen.of("peer.sweep", "due")) == 1
    # The rolled-back requests never existed, and no sweep is due for them.
    assert not store.sismember(DUE_TOPICS_KEY, rolled_back)


def test_a_burst_into_one_pool_while_its_sweep_waits_queues_that_one_sweep(
    worker, triggers_here, db
):
    topic = unique("topic")
    users = [make_user(db).id for _ in range(1_000)]
    db.commit()

    def request(user_id: int) -> None:
        with session_factory().begin() as session:
            create_request(session, user_id, "Easy", topic)

    with queues_taken_from(worker, "sweeps", "events"), task_events() as seen:
        # 1,000 requests committed one by one, as fast as eight connections go, while no
        # worker takes the sweeps queue: the first commit's sweep waits there unstarted.
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as committers:
            list(committers.map(request, users))
        elapsed_ms = (time.monotonic() - started) * 1000
        with running_worker("burst", queues="sweeps,events", extra_env=TRIGGERS_ON):
            wait_for(lambda: len(pairs_of_topic(db, topic)) == 500, timeout=120, what="every pair")

    # Every commit after the first rode along with its sweep; only a burst that outlasts
    # the queued key's lifetime may queue one more per lifetime.
    assert 1 <= len(seen.of("peer.sweep", "due")) <= 1 + elapsed_ms // QUEUED_TTL_MS
    paired = {user for pair in pairs_of_topic(db, topic) for user in pair}
    assert paired == set(users)


def _triggered_sweeps_since(db: Session, moment: datetime) -> int:
    """Sweeps commits sent that reached a worker since `moment`, counted in the ledger."""
    db.rollback()
    return int(
        db.scalar(
            text(
                "SELECT count(*) FROM task_runs WHERE name = 'peer.sweep' "
                "AND caller = 'trigger' AND accepted_at >= :moment"
            ),
            {"moment": moment},
        )
        or 0
    )


def test_a_burst_over_many_topics_costs_a_bounded_number_of_sweeps(worker, triggers_here, db):
    topics = [unique("topic") for _ in range(50)]
    users = [make_user(db).id for _ in range(2 * len(topics))]
    db.commit()
    began = db.scalar(text("SELECT now()"))

    def request(place: int) -> None:
        with session_factory().begin() as session:
            create_request(session, users[place], "Easy", topics[place % len(topics)])

    with queues_taken_from(worker, "sweeps", "events"):
        # Two requests in each of 50 topics, committed one by one by eight connections
        # while no worker takes sweeps: every commit finds the sweep of due topics queued.
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as committers:
            list(committers.map(request, range(len(users))))
        elapsed_ms = (time.monotonic() - started) * 1000
        with running_worker("many-topics", queues="sweeps,events", extra_env=TRIGGERS_ON):
            wait_for(
                lambda: all(pairs_of_topic(db, topic) for topic in topics),
                timeout=120,
                what="a pair in every topic",
            )
            swept = _triggered_sweeps_since(db, began)

    # One sweep for the whole burst, and one more per lifetime of the queued key it
    # may outlast: not one per topic.
    assert 1 <= swept <= 1 + elapsed_ms // QUEUED_TTL_MS
    for place, topic in enumerate(topics):
        assert pairs_of_topic(db, topic) == {frozenset((users[place], users[place + 50]))}


def test_a_lone_pair_in_a_quiet_system_is_matched_by_one_sweep(worker, triggers_here, db):
    topic = unique("topic")
    users = [make_user(db).id for _ in range(2)]
    db.commit()
    with (
        queues_taken_from(worker, "sweeps", "events"),
        running_worker("quiet", queues="sweeps,events", extra_env=TRIGGERS_ON),
    ):
        # The worker is up and idle: the first sweep it takes is this pair's.
        began = db.scalar(text("SELECT now()"))
        for user in users:
            with session_factory().begin() as session:
                create_request(session, user, "Easy", topic)
        committed = time.monotonic()
        wait_for(lambda: pairs_of_topic(db, topic), timeout=30, what="the pair")
        matched_ms = (time.monotonic() - committed) * 1000
        swept = _triggered_sweeps_since(db, began)

    assert pairs_of_topic(db, topic) == {frozenset(users)}
    assert 1 <= swept <= 2
    # One window (50 ms) plus a task's round trip; generous for a loaded machine.
    assert matched_ms < 2_000


def _relay_queued() -> bool:
    """Whether a commit has sent the relay task and it has not started yet."""
    return bool(session_store().exists(queued_key(Followup("events.publish"))))


def test_a_commits_events_are_published_as_it_commits_with_no_relay_task(worker, triggers_here, db):
    marker = uuid.uuid4().hex
    # Older events other tests left unpublished would fill the batch ahead of these.
    run_task("events.publish")
    with (
        queues_taken_from(worker, "events"),
        app.connection_for_write() as connection,
        bound_to_events(connection, f"test-events-{marker[:8]}") as queue,
    ):
        with session_factory().begin() as session:
            emit_events(session, "match.proposed", [{"marker": marker, "n": n} for n in range(3)])
        # Once the commit returns, its events are on the exchange: nothing waits for a
        # window or a relay task's turn, and none was sent.
        assert unpublished_events(db, marker) == 0
        assert not _relay_queued()
        bodies = [b for b in take_events(connection, queue) if b["data"].get("marker") == marker]

    assert sorted(body["data"]["n"] for body in bodies) == [0, 1, 2]


def test_a_backlog_past_one_batch_is_left_to_the_relay_task(worker, triggers_here, db):
    marker = uuid.uuid4().hex
    with (
        app.connection_for_write() as connection,
        bound_to_events(connection, f"test-events-{marker[:8]}") as queue,
    ):
        with queues_taken_from(worker, "events"):
            with session_factory().begin() as session:
                payloads = [{"marker": marker, "n": n} for n in range(RELAY_BATCH + 100)]
                emit_events(session, "match.proposed", payloads)
            # The commit relayed one batch and sent the relay task for the rest.
            assert unpublished_events(db, marker) >= 100
            assert _relay_queued()
        # The session worker takes the events queue again, and the relay task with it.
        wait_for(lambda: unpublished_events(db, marker) == 0, timeout=60, what="the relay task")
        bodies = [b for b in take_events(connection, queue) if b["data"].get("marker") == marker]

    assert sorted(body["data"]["n"] for body in bodies) == list(range(RELAY_BATCH + 100))


def test_a_sweep_of_every_pool_fans_out_and_four_processes_keep_a_tight_cap(worker, db):
    topics = [unique("topic") for _ in range(12)]
    for topic in topics:
        for difficulty in ("Easy", "Medium", "Hard"):
            make_pool(db, 10, topic=topic, difficulty=difficulty)
    db.commit()
    cap = count_open_matches(db) + 50
    highest = [0]
    watching = threading.Event()

    def watch_open_matches() -> None:
        with session_factory()() as session:
            while not watching.is_set():
                highest[0] = max(highest[0], count_open_matches(session))
                session.rollback()

    watcher = threading.Thread(target=watch_open_matches, daemon=True)
    with capped_sweeper(worker, "fan-out", cap, concurrency=4), task_events() as seen:
        watcher.start()
        for _ in range(3):
            send("peer.sweep")
        wait_for(
            lambda: (
                all(seen.of("peer.sweep", topic) for topic in topics)
                and count_open_matches(db) == cap
            ),
            timeout=60,
            what="a sweep of every topic, and the cap filled",
        )
        watching.set()
        watcher.join(10)

    assert highest[0] <= cap
    pairs = db.execute(
        text(
            "SELECT r, count(*) FROM (SELECT request_a AS r FROM matches WHERE topic = ANY(:t) "
            "UNION ALL SELECT request_b FROM matches WHERE topic = ANY(:t)) AS s GROUP BY r"
        ),
        {"t": topics},
    ).all()
    assert {count for _, count in pairs} <= {1}
    assert _self_pairs(db, topics) == 0


def _self_pairs(db: Session, topics: list[str]) -> int:
    return int(
        db.scalar(
            text("SELECT count(*) FROM matches WHERE topic = ANY(:t) AND user_a = user_b"),
            {"t": topics},
        )
        or 0
    )


def _result_keys(backend: redis.Redis) -> set[bytes]:
    return set(backend.scan_iter(match="celery-task-meta-*", count=1000))


def test_a_short_beat_run_stores_no_result_per_tick(worker, db, tmp_path: Path):
    # Work for every tick: beat skips the ticks of tasks with nothing waiting.
    create_request(db, make_user(db).id, "Easy", unique("topic"))
    emit_event(db, "request.expired", {"request_id": 1})
    db.commit()
    backend = redis.Redis.from_url(get_settings().backend)
    before = _result_keys(backend)
    with task_events() as seen, running_beat(tmp_path / "beat.log"):
        # peer.expire ticks every 5 s; the sweep and relay ticks every 10 s.
        wait_for(
            lambda: (
                seen.done("peer.expire") >= 2
                and seen.done("peer.sweep") >= 1
                and seen.done("events.publish") >= 1
            ),
            timeout=40,
            what="the ticks of the first 10 s",
        )

    # Only beat's own tasks count (the ledger names their caller): other tests' tasks of
    # the same names, sent asking for a result, may still be finishing.
    received = [
        event["uuid"]
        for name in ("peer.expire", "peer.sweep", "events.publish")
        for event in seen.of(name)
    ]
    ticked = {
        f"celery-task-meta-{task_id}".encode()
        for task_id in received
        if (run := task_run(task_id)) is not None and run.caller == "beat"
    }
    assert ticked
    assert (_result_keys(backend) - before) & ticked == set()
