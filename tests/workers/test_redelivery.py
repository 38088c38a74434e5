"""A worker process killed with SIGKILL mid-task: the message goes back to the queue,
runs again, and its effect happens once."""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter

from bench.harness import bound_to_events, take_events
from core.db import get_engine
from core.outbox import emit_events
from tests.support import (
    LONG_LOCK_WAIT,
    lock_waiter_pids,
    lock_waiters,
    queue_taken_from,
    running_worker,
    send,
    task_run,
    wait_for,
)
from workers.app import app


def test_relay_killed_mid_task_is_redelivered_and_publishes_each_event_once(worker, db):
    marker = uuid.uuid4().hex

    # The session worker steps aside from the events queue so the message can only
    # reach the worker this test kills.
    with (
        queue_taken_from(worker, "events"),
        app.connection_for_write() as connection,
        running_worker(
            "victim", queues="events", concurrency=1, extra_env=LONG_LOCK_WAIT
        ) as victim,
        bound_to_events(connection, f"test-kill-{marker[:8]}", "match.found") as queue,
    ):
        # Bound first: any relay running meanwhile publishes these to the queue too.
        emit_events(db, "match.found", [{"marker": marker, "n": n} for n in range(50)])
        db.commit()

        # Hold the outbox so the relay blocks mid-task, inside its transaction.
        blocker = get_engine().connect()
        blocker.exec_driver_sql("BEGIN")
        blocker.exec_driver_sql("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        try:
            result = send("events.publish")
            wait_for(lambda: lock_waiters("%FROM outbox%") == 1, what="relay to block")
            killed = lock_waiter_pids("%FROM outbox%")
            (child,) = victim.child_pids()
            os.kill(child, signal.SIGKILL)
            # The pool replaces the child and the requeued message runs again.
            wait_for(
                lambda: child not in victim.child_pids() and victim.child_pids(),
                what="replacement child",
            )
            # The killed run's guard transaction ended with its connection, so the
            # redelivery gets as far as the outbox too; the killed run's relay statement
            # waits there until the server finds its client gone.
            wait_for(
                lambda: lock_waiter_pids("%FROM outbox%") - killed,
                what="the redelivered relay to block",
            )
            assert result.state != "FAILURE"
        finally:
            blocker.exec_driver_sql("COMMIT")
            blocker.close()
        result.get(timeout=60)
        # Delivered twice; other relays may have published some of the events meanwhile
        # (each takes what the others have not locked), so the count is checked below.
        assert task_run(result.id).deliveries == 2
        # Rows the killed run's backend still held when the redelivery passed were skipped
        # (SKIP LOCKED); the next relay, as beat or a commit would send it, takes them.
        send("events.publish").get(timeout=60)

        bodies = take_events(connection, queue)

    mine = Counter(b["event_id"] for b in bodies if b["data"].get("marker") == marker)
    assert len(mine) == 50
    assert set(mine.values()) == {1}
    assert (
        "Process 'ForkPoolWorker" in victim.log_path.read_text()
        or "WorkerLostError" in victim.log_path.read_text()
    )
