"""`maintenance.reconcile`: repairs of what a crash can leave behind, and their report."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from celery import states
from sqlalchemy import Select, case, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from core.audit import prune_audit_log
from core.metrics import failure_label
from core.relay import count_stuck
from core.results import TaskResult
from domain.peer.declines import prune_declines
from domain.peer.repairs import requeue_orphaned_requests, restore_session_keys
from domain.peer.session_store import SessionStore
from models.platform import TaskRun, TaskRunTotal

# Unpublished this long means the relay stopped or fell behind.
STUCK_OUTBOX_SECONDS = 60
# Idempotency keys must hold for at least 24 hours; a week keeps status lookups working.
TASK_RUN_RETENTION_DAYS = 7


class ReconcileResult(TaskResult):
    """What one reconcile run found and repaired: the outbox first, then each repair's count."""

    outbox_stuck: int
    outbox_relayed: int
    task_runs_pruned: int
    peer_requests_requeued: int
    peer_session_keys_restored: int
    peer_declines_pruned: int
    audit_rows_pruned: int


def prune_task_runs(session: Session) -> int:
    """Forget finished tasks (outcomes and idempotency keys) past retention; how many.

    Unfinished ones stay whatever their age: they are still to run.
    """
    return session.execute(PRUNE_TASK_RUNS).scalar_one()


def _prune_task_runs() -> Select[int]:
    """One statement: delete the finished rows past retention and add what they counted
    (failures by error label, redispatches) to task_run_totals, so the counters of
    `GET /metrics` do not go down when rows go."""
    cutoff = func.now() - func.make_interval(0, 0, 0, TASK_RUN_RETENTION_DAYS)
    pruned = (
        delete(TaskRun)
        .where(TaskRun.finished_at < cutoff)
        .returning(TaskRun.name, TaskRun.state, TaskRun.error, TaskRun.redispatches)
        .cte("pruned")
    )
    failed = pruned.c.state == states.FAILURE
    label = case((failed, failure_label(pruned.c.error["type"].astext)), else_="")
    counted = select(
        pruned.c.name,
        label.label("failure"),
        func.count().filter(failed),
        func.coalesce(func.sum(pruned.c.redispatches), 0),
    ).group_by(pruned.c.name, "failure")
    fold = insert(TaskRunTotal).from_select(["name", "error", "failures", "redispatches"], counted)
    folded = fold.on_conflict_do_update(
        index_elements=[TaskRunTotal.name, TaskRunTotal.error],
        set_={
            "failures": TaskRunTotal.failures + fold.excluded.failures,
            "redispatches": TaskRunTotal.redispatches + fold.excluded.redispatches,
        },
    ).cte("folded")
    return select(func.count()).select_from(pruned).add_cte(folded)


PRUNE_TASK_RUNS = _prune_task_runs()


def reconcile(
    sessions: sessionmaker[Session],
    *,
    relay: Callable[[], int],
    store: SessionStore,
    audit_retention_days: int,
    progress: Callable[[int, int], None],
) -> ReconcileResult:
    """Count the stuck outbox rows and `relay` them if there are any, then run each repair.

    Each repair runs in its own transaction, so one failing repair does not undo the
    rest; `progress(done, total)` follows each.
    """
    with sessions.begin() as session:
        stuck = count_stuck(session, STUCK_OUTBOX_SECONDS)
    relayed = relay() if stuck else 0
    repairs: tuple[Callable[[Session], int], ...] = (
        prune_task_runs,
        requeue_orphaned_requests,
        partial(restore_session_keys, store=store),
        prune_declines,
        partial(prune_audit_log, retention_days=audit_retention_days),
    )
    counts: list[int] = []
    for repair in repairs:
        with sessions.begin() as session:
            counts.append(repair(session))
        progress(len(counts), len(repairs))
    task_runs, requests, session_keys, declines, audit_rows = counts
    return {
        "outbox_stuck": stuck,
        "outbox_relayed": relayed,
        "task_runs_pruned": task_runs,
        "peer_requests_requeued": requests,
        "peer_session_keys_restored": session_keys,
        "peer_declines_pruned": declines,
        "audit_rows_pruned": audit_rows,
    }
