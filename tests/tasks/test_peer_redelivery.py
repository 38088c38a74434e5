"""A sweep whose worker process is killed mid-way: nothing half-done stays behind, and
the message, run again, pairs the pool exactly once."""

from __future__ import annotations

import os
import signal

from sqlalchemy import text

from core.db import get_engine
from core.locks import hold_advisory_lock
from domain.peer.budget import OPEN_MATCH_BUDGET_LOCK
from tests.factories import unique
from tests.factories_peer import make_pool, matches_of_topic, request_row
from tests.support import (
    LONG_LOCK_WAIT,
    queue_taken_from,
    run_task,
    running_worker,
    send,
    wait_for,
)


def _sweeps_at_the_budget_lock(blocker_pid: int) -> set[int]:
    """Backends of sweeps waiting for (or just given) the open-match budget lock."""
    with get_engine().connect() as conn:
        return set(
            conn.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE state <> 'idle' AND pid NOT IN (pg_backend_pid(), :blocker) "
                    "AND query LIKE '%pg_advisory_xact_lock(hashtext%'"
                ),
                {"blocker": blocker_pid},
            )
        )


def test_sweep_killed_while_holding_its_claim_is_redone_cleanly(worker, db):
    topic = unique("topic")
    pool = make_pool(db, 6, topic=topic)
    db.commit()

    with (
        queue_taken_from(worker, "sweeps"),
        # A lock wait as long as the test needs to see it and kill the process in it.
        running_worker(
            "peer-victim", queues="sweeps", concurrency=1, extra_env=LONG_LOCK_WAIT
        ) as victim,
    ):
        # Hold the open-match budget so the sweep stops after claiming its pool.
        blocker = get_engine().connect()
        blocker.exec_driver_sql("BEGIN")
        hold_advisory_lock(blocker, OPEN_MATCH_BUDGET_LOCK)
        blocker_pid = blocker.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        try:
            result = send("peer.sweep", difficulty="Easy", topic=topic)
            wait_for(
                lambda: len(_sweeps_at_the_budget_lock(blocker_pid)) == 1, what="sweep to block"
            )
            killed = _sweeps_at_the_budget_lock(blocker_pid)
            (child,) = victim.child_pids()
            os.kill(child, signal.SIGKILL)
            # The transaction holding the pool dies with its connection, so the pool is
            # free at once: the message comes back, runs again in the replacement process
            # and waits for the budget, while the dead sweep's orphaned reservation waits
            # until the server finds its client gone.
            wait_for(
                lambda: _sweeps_at_the_budget_lock(blocker_pid) - killed, what="rerun to block"
            )
        finally:
            blocker.exec_driver_sql("COMMIT")
            blocker.close()
        assert result.get(timeout=60) == {"matched": 3}
        wait_for(lambda: not _sweeps_at_the_budget_lock(blocker_pid), what="orphan to go")
        assert "WorkerLostError" in victim.log_path.read_text() or (
            "Process 'ForkPoolWorker" in victim.log_path.read_text()
        )

    assert run_task("peer.sweep", difficulty="Easy", topic=topic) == {"matched": 0}
    matches = matches_of_topic(db, topic)
    paired = [str(r) for m in matches for r in (m.request_a, m.request_b)]
    assert sorted(paired) == sorted(str(r.id) for r in pool)
    assert {request_row(db, r.id).status for r in pool} == {"matched"}
