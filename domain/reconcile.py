"""`maintenance.reconcile`: repairs of what a crash can leave behind, and their report."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from core.audit import prune_audit_log
from core.relay import count_stuck
from core.results import TaskResult
from core.task_store import prune_task_runs
from domain.peer.declines import prune_declines
from domain.peer.repairs import requeue_orphaned_requests, restore_session_keys
from domain.peer.session_store import SessionStore

# Unpublished this long means the relay stopped or fell behind.
STUCK_OUTBOX_SECONDS = 60


class ReconcileResult(TaskResult):
    """What one reconcile run found and repaired: the outbox first, then each repair's count."""

    outbox_stuck: int
    outbox_relayed: int
    task_runs_pruned: int
    peer_requests_requeued: int
    peer_session_keys_restored: int
    peer_declines_pruned: int
    audit_rows_pruned: int


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
