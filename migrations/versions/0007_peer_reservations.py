"""Peer: reservations of the open-match cap, held by sweeps running side by side, and
the pending-pool index led by topic, the unit of a sweep.

Revision ID: 0007_peer_reservations
Revises: 0006_audit_log
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_peer_reservations"
down_revision: str | None = "0006_audit_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "peer_match_reservations",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("pairs", sa.Integer(), nullable=False),
        sa.Column(
            "reserved_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("pairs > 0", name=op.f("ck_peer_match_reservations_positive_pairs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_peer_match_reservations")),
    )
    _pending_pool_index("topic", "difficulty", "created_at")


def downgrade() -> None:
    _pending_pool_index("difficulty", "topic", "created_at")
    op.drop_table("peer_match_reservations")


def _pending_pool_index(*columns: str) -> None:
    op.drop_index("ix_match_requests_pending_pool", table_name="match_requests")
    op.create_index(
        "ix_match_requests_pending_pool",
        "match_requests",
        list(columns),
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
