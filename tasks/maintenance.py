"""Repairs of what a crash can leave behind."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.orm import Session

from core.audit import prune_audit_log
from core.db import rowcount, session_factory
from core.relay import count_stuck
from core.results import TaskResult
from core.settings import Settings, get_settings
from domain.peer.declines import prune_declines
from domain.peer.repairs import requeue_orphaned_requests, restore_session_keys
from domain.peer.session_store import session_store
from models.platform import TaskRun
from tasks.events import relay_pending
from workers.base import NoArgs, ProgressReporter, own_transactions_task

# Unpublished this long means the relay stopped or fell behind.
STUCK_OUTBOX_SECONDS = 60
# Idempotency keys must hold for at least 24 hours; a week keeps status lookups working.
TASK_RUN_RETENTION_DAYS = 7


def prune_task_runs(session: Session) -> dict[str, int]:
    """Forget finished tasks (outcomes and idempotency keys) past retention.

    Unfinished ones stay whatever their age: they are still to run.
    """
    cutoff = func.now() - func.make_interval(0, 0, 0, TASK_RUN_RETENTION_DAYS)
    result = session.execute(delete(TaskRun).where(TaskRun.finished_at < cutoff))
    return {"task_runs_pruned": rowcount(result)}


Repair = Callable[[Session], dict[str, int]]


def repairs(settings: Settings) -> tuple[Repair, ...]:
    """The repairs of one reconcile run, in order, with what each needs of `settings`."""
    return (
        prune_task_runs,
        requeue_orphaned_requests,
        partial(restore_session_keys, store=session_store()),
        prune_declines,
        partial(prune_audit_log, retention_days=settings.audit_retention_days),
    )


class ReconcileResult(TaskResult):
    """What one reconcile run found and repaired: the outbox first, then each repair's count."""

    outbox_stuck: int
    outbox_relayed: int
    task_runs_pruned: int
    peer_requests_requeued: int
    peer_session_keys_restored: int
    peer_declines_pruned: int
    audit_rows_pruned: int


@own_transactions_task(
    "maintenance.reconcile", args=NoArgs, result=ReconcileResult, ignore_result=True
)
def reconcile_task(reporter: ProgressReporter, args: NoArgs) -> dict[str, Any]:
    """Repair what a crash can leave: stuck outbox rows, orphaned state, missing keys."""
    report: dict[str, Any] = {}
    with session_factory().begin() as session:
        stuck = count_stuck(session, STUCK_OUTBOX_SECONDS)
    report["outbox_stuck"] = stuck
    report["outbox_relayed"] = relay_pending() if stuck else 0
    # Each repair runs in its own transaction, so one failing repair does not undo the rest.
    steps = repairs(get_settings())
    for index, repair in enumerate(steps, start=1):
        with session_factory().begin() as session:
            report.update(repair(session))
        reporter.progress(index, len(steps))
    return report
