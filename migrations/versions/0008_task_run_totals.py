"""Task counts that outlive the pruning of `task_runs`: failures by task and error
label, redispatches by task, added up as `maintenance.reconcile` deletes finished rows.

Revision ID: 0008_task_run_totals
Revises: 0007_peer_reservations
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_task_run_totals"
down_revision: str | None = "0007_peer_reservations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_run_totals",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("redispatches", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "error", name=op.f("pk_task_run_totals")),
    )


def downgrade() -> None:
    op.drop_table("task_run_totals")
