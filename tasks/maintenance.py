"""Repairs of what a crash can leave behind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.orm import Session

from core.db import session_factory
from core.relay import count_stuck
from domain.peer.declines import prune_declines
from domain.peer.repairs import requeue_orphaned_requests, restore_session_keys
from models.platform import EnqueuedTask
from tasks.events import relay_pending
from workers.base import NoArgs, ProgressReporter, batched_task

# Unpublished this long means the relay stopped or fell behind.
STUCK_OUTBOX_SECONDS = 60
# Idempotency keys must hold for at least 24 hours; a week keeps status lookups working.
ENQUEUED_TASK_RETENTION_DAYS = 7


def prune_enqueued_tasks(session: Session) -> dict[str, int]:
    """Forget API enqueue records (and their idempotency keys) past retention."""
    cutoff = func.now() - func.make_interval(0, 0, 0, ENQUEUED_TASK_RETENTION_DAYS)
    result = session.execute(delete(EnqueuedTask).where(EnqueuedTask.created_at < cutoff))
    return {"enqueued_tasks_pruned": result.rowcount}  # type: ignore[attr-defined]


# Each repair runs in its own transaction, so one failing repair does not undo the rest.
REPAIRS: tuple[Callable[[Session], dict[str, int]], ...] = (
    prune_enqueued_tasks,
    requeue_orphaned_requests,
    restore_session_keys,
    prune_declines,
)


@batched_task("maintenance.reconcile", args=NoArgs, ignore_result=True)
def reconcile(reporter: ProgressReporter, args: NoArgs) -> dict[str, Any]:
    """Repair what a crash can leave: stuck outbox rows, orphaned state, missing keys."""
    report: dict[str, Any] = {}
    with session_factory().begin() as session:
        stuck = count_stuck(session, STUCK_OUTBOX_SECONDS)
    report["outbox_stuck"] = stuck
    report["outbox_relayed"] = relay_pending() if stuck else 0
    for index, repair in enumerate(REPAIRS, start=1):
        with session_factory().begin() as session:
            report.update(repair(session))
        reporter.progress(index, len(REPAIRS))
    return report
