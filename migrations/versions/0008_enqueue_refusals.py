"""Refused enqueues by HTTP status, the counter behind `matchops_enqueue_refused_total`.

Revision ID: 0008_enqueue_refusals
Revises: 0007_peer_reservations
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_enqueue_refusals"
down_revision: str | None = "0007_peer_reservations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "enqueue_refusals",
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("refused", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("status", name=op.f("pk_enqueue_refusals")),
    )


def downgrade() -> None:
    op.drop_table("enqueue_refusals")
