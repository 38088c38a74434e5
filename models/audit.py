"""The audit trail: one row per cascade or operator-visible change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Index, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class AuditLog(Base):
    """What a task changed, written in the same transaction as the change.

    `task_id` is the Celery task id, the one `GET /v1/tasks/{id}` answers for; the task
    columns are NULL for a change made outside a task (a script calling the domain).
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        # A caller holding a task id looks up what that task changed.
        Index("ix_audit_log_task_id", "task_id"),
        # Retention prunes by age.
        Index("ix_audit_log_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.now())
    task_id: Mapped[str | None] = mapped_column(Text)
    task_name: Mapped[str | None] = mapped_column(Text)
    caller: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    subject: Mapped[dict[str, Any]]
    counts: Mapped[dict[str, Any]]
