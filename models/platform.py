"""Tables of the platform itself: the event outbox and API-enqueued tasks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Index, Text, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class OutboxEvent(Base):
    """An event written in the same transaction as the change it reports.

    `events.publish` relays unpublished rows to the `matching.events` exchange.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        # The relay only ever scans the unpublished tail.
        Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True, server_default=func.gen_random_uuid())
    type: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.now())
    data: Mapped[dict[str, Any]]
    published_at: Mapped[datetime | None]


class EnqueuedTask(Base):
    """A task enqueued through the HTTP API; the idempotency key lives here."""

    __tablename__ = "enqueued_tasks"
    __table_args__ = (UniqueConstraint("caller", "idempotency_key", name="uq_enqueued_tasks_key"),)

    task_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    args: Mapped[dict[str, Any]]
    caller: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)
