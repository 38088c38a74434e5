"""One dispatcher leads (it alone listens for new tasks), the others stand by, and a
standby leads once the leader's session dies; tasks are dispatched throughout."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import text

from core.db import get_bookkeeping_engine, get_engine, libpq_conninfo
from core.dispatcher import LEADER_LOCK, Dispatcher
from submission.service import enqueue_task, prepare_task
from tests.factories import unique
from tests.support import WorkerProcess, task_finished, wait_for
from workers.app import app

# Sessions holding the leader's lock in this database (a one-bigint advisory key).
LEADERS = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
    "AND ((classid::bigint << 32) | objid::bigint) = hashtext(:name)::bigint "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
WAITING_FOR_LOCK = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = :pid"
)


def _leaders() -> list[int]:
    with get_engine().connect() as connection:
        return list(connection.scalars(LEADERS, {"name": LEADER_LOCK}))


@contextmanager
def _standing_by(count: int) -> Iterator[list[Dispatcher]]:
    dispatchers = [
        Dispatcher(app, get_bookkeeping_engine(), interval=0.2, redispatch_after=300)
        for _ in range(count)
    ]
    for dispatcher in dispatchers:
        dispatcher.start()
    try:
        yield dispatchers
    finally:
        for dispatcher in dispatchers:
            dispatcher.stop()


def _dispatched_and_run() -> None:
    task = prepare_task("events.publish", {}, caller=unique("leader-test"))
    task_id = enqueue_task(task)["task_id"]
    wait_for(lambda: task_finished(task_id), timeout=30, what="the task dispatched and run")


def test_one_dispatcher_leads_and_a_standby_takes_over_when_its_session_dies(
    worker: WorkerProcess,
) -> None:
    with _standing_by(2) as ours:
        # The session worker's dispatcher and these two: exactly one of them leads.
        wait_for(lambda: len(_leaders()) == 1, what="one leader")
        assert sum(dispatcher.leading for dispatcher in ours) <= 1

        # This test takes the lead from under all of them: its own session queues for the
        # lock, and the leader's session is ended.
        with psycopg.connect(libpq_conninfo(), autocommit=True) as usurper:
            pid = usurper.info.backend_pid
            queued = threading.Thread(
                target=usurper.execute,
                args=("SELECT pg_advisory_lock(hashtext(%s))", (LEADER_LOCK,)),
                daemon=True,
            )
            queued.start()
            with get_engine().connect() as connection:
                wait_for(
                    lambda: connection.scalar(WAITING_FOR_LOCK, {"pid": pid}) == 1,
                    what="the test's session queued for the lock",
                )
                [leader] = _leaders()
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": leader})
            queued.join(10)
            assert _leaders() == [pid]
            # Every dispatcher stands by; accepted tasks are still dispatched.
            wait_for(lambda: not any(dispatcher.leading for dispatcher in ours), what="standby")
            _dispatched_and_run()

        # The leading session is gone: a standby leads within an interval or so. The
        # closed session's backend exits after the close returns, so its lock may show a
        # moment longer: wait for a leader other than it.
        wait_for(
            lambda: len(_leaders()) == 1 and _leaders() != [pid],
            timeout=5,
            what="a standby to lead",
        )
        assert _leaders() != [pid]
        _dispatched_and_run()
