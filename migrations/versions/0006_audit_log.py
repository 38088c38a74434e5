"""Audit trail, and what peer.explain and the pool figures read.

Revision ID: 0006_audit_log
Revises: 0005_task_runs
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_audit_log"
down_revision: str | None = "0005_task_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column(
            "occurred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.Column("task_name", sa.Text(), nullable=True),
        sa.Column("caller", sa.Text(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("subject", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("counts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_task_id", "audit_log", ["task_id"], unique=False)
    op.create_index("ix_audit_log_occurred_at", "audit_log", ["occurred_at"], unique=False)
    op.add_column(
        "match_requests", sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_match_requests_expired_at",
        "match_requests",
        ["expired_at"],
        unique=False,
        postgresql_where=sa.text("status = 'expired'"),
    )
    op.create_index(
        "ix_matches_created_brin", "matches", ["created_at"], unique=False, postgresql_using="brin"
    )


def downgrade() -> None:
    op.drop_index("ix_matches_created_brin", table_name="matches")
    op.drop_index("ix_match_requests_expired_at", table_name="match_requests")
    op.drop_column("match_requests", "expired_at")
    op.drop_index("ix_audit_log_occurred_at", table_name="audit_log")
    op.drop_index("ix_audit_log_task_id", table_name="audit_log")
    op.drop_table("audit_log")
