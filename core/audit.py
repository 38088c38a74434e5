"""The audit trail: a row per cascade or operator-visible change, in its transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from core.context import task_context
from core.db import rowcount
from models.audit import AuditLog


def record_audit(
    session: Session,
    action: str,
    subject: Mapping[str, Any],
    counts: Mapping[str, object],
) -> None:
    """Record `action` on `subject` (the ids it concerns) with what it changed (`counts`).

    `counts` are numbers by name, often the task's result shape itself.

    Written in the caller's transaction, so the row commits or rolls back with the
    change; the running task (`core.context`) names who made it. An action whose counts
    are all zero changed nothing and leaves no row: periodic sweeps would otherwise
    fill the trail with runs that found nothing to do.
    """
    if not any(counts.values()):
        return
    context = task_context(session)
    session.execute(
        insert(AuditLog).values(
            task_id=context.task_id if context else None,
            task_name=context.task_name if context else None,
            caller=context.caller if context else None,
            action=action,
            subject=to_jsonable_python(dict(subject)),
            counts=dict(counts),
        )
    )


def prune_audit_log(session: Session, retention_days: int) -> int:
    """Delete audit rows older than `retention_days`; how many."""
    cutoff = func.now() - func.make_interval(0, 0, 0, retention_days)
    return rowcount(session.execute(delete(AuditLog).where(AuditLog.occurred_at < cutoff)))


def audit_of_task(session: Session, task_id: str) -> list[dict[str, Any]]:
    """What task `task_id` changed: its audit rows, oldest first."""
    rows = session.execute(
        select(AuditLog).where(AuditLog.task_id == task_id).order_by(AuditLog.id)
    ).scalars()
    return [
        {
            "occurred_at": row.occurred_at.isoformat(),
            "task_name": row.task_name,
            "caller": row.caller,
            "action": row.action,
            "subject": row.subject,
            "counts": row.counts,
        }
        for row in rows
    ]
