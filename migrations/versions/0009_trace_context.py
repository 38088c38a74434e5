"""Tracing: the trace context of each accepted task, and of each event, stored with it.

`task_runs.traceparent` is the W3C `traceparent` of the span that recorded the task, so
every dispatch of it continues that trace. `outbox.traceparent` defaults to the context
the writing transaction declared (`matchops.traceparent`, set by the task base while
tracing is on), so every statement that writes events stamps them without naming it.

Revision ID: 0009_trace_context
Revises: 0008_task_run_totals
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_trace_context"
down_revision: str | None = "0008_task_run_totals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# NULL outside a traced transaction: unset, or reset to '' once one has ended.
OUTBOX_TRACEPARENT_DEFAULT = "NULLIF(current_setting('matchops.traceparent'::text, true), ''::text)"


def upgrade() -> None:
    op.add_column("task_runs", sa.Column("traceparent", sa.Text(), nullable=True))
    op.add_column(
        "outbox",
        sa.Column(
            "traceparent",
            sa.Text(),
            server_default=sa.text(OUTBOX_TRACEPARENT_DEFAULT),
            nullable=True,
        ),
    )


def downgrade() -> None:
    op.drop_column("outbox", "traceparent")
    op.drop_column("task_runs", "traceparent")
