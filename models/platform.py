"""Tables of the platform itself: the event outbox and the task ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

# The trace context a transaction declared (core.tracing), NULL outside one: unset, or
# reset to '' once a traced transaction ended. Spelled as PostgreSQL renders it, so the
# schema comparison with the migrations finds it unchanged.
TRANSACTION_TRACEPARENT = "NULLIF(current_setting('matchops.traceparent'::text, true), ''::text)"


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
    # W3C traceparent of the task whose transaction wrote the event (tracing on), which
    # the relay continues; the transaction declares it, every insert inherits it.
    traceparent: Mapped[str | None] = mapped_column(
        Text, server_default=text(TRANSACTION_TRACEPARENT)
    )


class TaskRun(Base):
    """One task id: who asked for it, when it is due, its deliveries and its outcome.

    The API records a task here before it answers 202 (PostgreSQL is the source of
    truth for accepted tasks); a task that arrives through `send_task` or beat gets its
    row on its first delivery. The task base writes the outcome in the same transaction
    as the task's effects, so every later delivery of the id only replays it.
    """

    __tablename__ = "task_runs"
    __table_args__ = (
        UniqueConstraint("caller", "idempotency_key", name="uq_task_runs_key"),
        # The dispatchers' two scans: tasks never published, by when they are due; and
        # unfinished tasks, by when they were last published.
        Index(
            "ix_task_runs_undispatched", "due_at", postgresql_where=text("dispatched_at IS NULL")
        ),
        Index(
            "ix_task_runs_unfinished",
            "dispatched_at",
            postgresql_where=text("finished_at IS NULL"),
        ),
        Index("ix_task_runs_finished_at", "finished_at"),
    )

    # Any string Celery accepts: a sibling may choose its own ids (`"order-42"`).
    task_id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    args: Mapped[dict[str, Any]]
    # The API token's sub, or `beat`, `trigger`, `send_task`.
    caller: Mapped[str] = mapped_column(Text)
    # `api` for tasks the API accepted; else how the first delivery arrived.
    origin: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    accepted_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Accepted, or after its countdown; for a task the API never saw, when its message
    # was sent or became due (workers.base), else its first delivery. Queue wait counts
    # from here.
    due_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Last handed to the broker; NULL while a countdown waits or after a failed publish.
    dispatched_at: Mapped[datetime | None]
    # How often it was handed to the broker by a dispatcher's scan.
    redispatches: Mapped[int] = mapped_column(server_default=text("0"))
    started_at: Mapped[datetime | None]
    deliveries: Mapped[int] = mapped_column(server_default=text("0"))
    # PENDING, STARTED, RETRY, SUCCESS, FAILURE; NULL for records older than the
    # ledger, whose outcome lives in the result backend only.
    state: Mapped[str | None] = mapped_column(Text)
    result: Mapped[Any | None] = mapped_column(JSONB)
    # `{"type", "message", "status"}` of a failed task.
    error: Mapped[dict[str, Any] | None]
    finished_at: Mapped[datetime | None]
    # W3C traceparent of the span that recorded the task (tracing on): every dispatch of
    # the task continues that trace.
    traceparent: Mapped[str | None] = mapped_column(Text)


class TaskRunTotal(Base):
    """What pruned `task_runs` rows counted, so the failure and redispatch counters of
    `GET /metrics` never go down: one row per task name and error label (`""` for the
    tasks that did not fail), added to as `maintenance.reconcile` deletes finished rows."""

    __tablename__ = "task_run_totals"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    error: Mapped[str] = mapped_column(Text, primary_key=True)
    failures: Mapped[int] = mapped_column(BigInteger)
    redispatches: Mapped[int] = mapped_column(BigInteger)


class TaskProgress(Base):
    """Progress a long task reports while it runs; kept apart from `task_runs`, whose
    row the running task holds locked until it records its outcome."""

    __tablename__ = "task_progress"

    task_id: Mapped[str] = mapped_column(
        Text, ForeignKey("task_runs.task_id", ondelete="CASCADE"), primary_key=True
    )
    progress: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
