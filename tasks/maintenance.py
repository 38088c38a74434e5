"""The reconcile task: repairs of what a crash can leave behind (domain.reconcile)."""

from __future__ import annotations

from core.db import session_factory
from core.relay import relay_pending
from core.settings import get_settings
from domain.peer.session_store import session_store
from domain.reconcile import ReconcileResult, reconcile
from workers.app import app
from workers.base import NoArgs, ProgressReporter, own_transactions_task
from workers.specs import Periodic


@own_transactions_task(
    "maintenance.reconcile",
    args=NoArgs,
    result=ReconcileResult,
    queue="maintenance",
    periodic=Periodic("reconcile", every=60.0, expires=55),
    ignore_result=True,
)
def reconcile_task(reporter: ProgressReporter, args: NoArgs) -> ReconcileResult:
    """Repair what a crash can leave: stuck outbox rows, orphaned state, missing keys."""
    sessions = session_factory()
    return reconcile(
        sessions,
        relay=lambda: relay_pending(app.connection_for_write),
        store=session_store(),
        audit_retention_days=get_settings().audit_retention_days,
        progress=reporter.progress,
    )
