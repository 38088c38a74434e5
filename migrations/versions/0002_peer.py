"""Peer practice: questions, requests, matches, collaboration sessions.

Revision ID: 0002_peer
Revises: 0001_platform
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_peer"
down_revision: str | None = "0001_platform"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "questions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("difficulty", sa.Text(), nullable=False),
        sa.Column("topics", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_questions")),
    )
    op.create_index(
        "ix_questions_topics", "questions", ["topics"], unique=False, postgresql_using="gin"
    )
    op.create_table(
        "match_requests",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("difficulty", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("match_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_match_requests_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_requests")),
    )
    op.create_index(
        op.f("ix_match_requests_match_id"), "match_requests", ["match_id"], unique=False
    )
    op.create_index(
        "ix_match_requests_pending_pool",
        "match_requests",
        ["difficulty", "topic", "created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "uq_match_requests_open_user",
        "match_requests",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('pending', 'matched')"),
    )
    op.create_table(
        "matches",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_a", sa.BigInteger(), nullable=False),
        sa.Column("user_b", sa.BigInteger(), nullable=False),
        sa.Column("difficulty", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending_confirmation", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("confirm_deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(["user_a"], ["users.id"], name=op.f("fk_matches_user_a_users")),
        sa.ForeignKeyConstraint(["user_b"], ["users.id"], name=op.f("fk_matches_user_b_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_matches")),
    )
    op.create_index(
        "ix_matches_open_deadline",
        "matches",
        ["confirm_deadline"],
        unique=False,
        postgresql_where=sa.text("status = 'pending_confirmation'"),
    )
    op.create_table(
        "collab_sessions",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("match_id", sa.Uuid(), nullable=False),
        sa.Column("question_id", sa.BigInteger(), nullable=True),
        sa.Column("language", sa.Text(), server_default="python", nullable=False),
        sa.Column("user_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["match_id"], ["matches.id"], name=op.f("fk_collab_sessions_match_id_matches")
        ),
        sa.ForeignKeyConstraint(
            ["question_id"], ["questions.id"], name=op.f("fk_collab_sessions_question_id_questions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collab_sessions")),
        sa.UniqueConstraint("match_id", name=op.f("uq_collab_sessions_match_id")),
    )


def downgrade() -> None:
    op.drop_table("collab_sessions")
    op.drop_table("matches")
    op.drop_table("match_requests")
    op.drop_table("questions")
