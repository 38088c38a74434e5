"""The task ledger: every accepted task, its deliveries and its outcome.

Replaces `enqueued_tasks`. Its rows move over with their idempotency keys; their
outcome lived in the result backend only, so they keep a NULL state and count as
finished (nothing dispatches them again).

Revision ID: 0005_task_runs
Revises: 0004_carpool
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_task_runs"
down_revision: str | None = "0004_carpool"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "task_runs",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("args", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("caller", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deliveries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_runs")),
        sa.UniqueConstraint("caller", "idempotency_key", name="uq_task_runs_key"),
    )
    op.create_index(
        "ix_task_runs_unfinished",
        "task_runs",
        ["due_at"],
        postgresql_where=sa.text("finished_at IS NULL"),
    )
    op.create_index("ix_task_runs_finished_at", "task_runs", ["finished_at"])
    op.create_table(
        "task_progress",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("progress", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task_runs.task_id"],
            name=op.f("fk_task_progress_task_id_task_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_progress")),
    )
    op.execute(
        """
        INSERT INTO task_runs (
            task_id, name, args, caller, origin, idempotency_key,
            accepted_at, due_at, dispatched_at, finished_at
        )
        SELECT task_id, name, args, caller, 'api', idempotency_key,
               created_at, created_at, created_at, created_at
        FROM enqueued_tasks
        """
    )
    op.drop_table("enqueued_tasks")


def downgrade() -> None:
    op.create_table(
        "enqueued_tasks",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("args", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("caller", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_enqueued_tasks")),
        sa.UniqueConstraint("caller", "idempotency_key", name="uq_enqueued_tasks_key"),
    )
    op.create_index(
        op.f("ix_enqueued_tasks_created_at"), "enqueued_tasks", ["created_at"], unique=False
    )
    op.execute(
        """
        INSERT INTO enqueued_tasks (task_id, name, args, caller, idempotency_key, created_at)
        SELECT task_id, name, args, caller, idempotency_key, accepted_at
        FROM task_runs WHERE origin = 'api'
        """
    )
    op.drop_table("task_progress")
    op.drop_table("task_runs")
