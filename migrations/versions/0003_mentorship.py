"""Mentorship: scores, relationships, blacklist, messages, bookings, stats.

Revision ID: 0003_mentorship
Revises: 0002_peer
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_mentorship"
down_revision: str | None = "0002_peer"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("mentor_id", sa.BigInteger(), nullable=False),
        sa.Column("mentee_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("booked_date", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mentee_id"], ["users.id"], name=op.f("fk_bookings_mentee_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["mentor_id"], ["users.id"], name=op.f("fk_bookings_mentor_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
    )
    op.create_index("ix_bookings_pair", "bookings", ["mentor_id", "mentee_id"], unique=False)
    op.create_table(
        "mentor_blacklist",
        sa.Column("mentee_id", sa.BigInteger(), nullable=False),
        sa.Column("mentor_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["mentee_id"], ["users.id"], name=op.f("fk_mentor_blacklist_mentee_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["mentor_id"], ["users.id"], name=op.f("fk_mentor_blacklist_mentor_id_users")
        ),
        sa.PrimaryKeyConstraint("mentee_id", "mentor_id", name=op.f("pk_mentor_blacklist")),
    )
    op.create_table(
        "mentor_mentee",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("mentor_id", sa.BigInteger(), nullable=False),
        sa.Column("mentee_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("initiated_by", sa.Text(), nullable=False),
        sa.Column("subscribe_to_quizzes", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("subscribe_to_courses", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("subscribe_to_subjects", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("mentor_notes", sa.Text(), nullable=True),
        sa.Column("mentee_notes", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["mentee_id"], ["users.id"], name=op.f("fk_mentor_mentee_mentee_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["mentor_id"], ["users.id"], name=op.f("fk_mentor_mentee_mentor_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mentor_mentee")),
        sa.UniqueConstraint("mentor_id", "mentee_id", name="uq_mentor_mentee_pair"),
    )
    op.create_index("ix_mentor_mentee_mentee_id", "mentor_mentee", ["mentee_id"], unique=False)
    op.create_index(
        "uq_mentor_mentee_active_mentee",
        "mentor_mentee",
        ["mentee_id"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index(
        "ix_mentor_mentee_active_mentor",
        "mentor_mentee",
        ["mentor_id"],
        unique=False,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_index(
        "ix_mentor_mentee_pending_created",
        "mentor_mentee",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("sender_id", sa.BigInteger(), nullable=False),
        sa.Column("receiver_id", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "sent_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["receiver_id"], ["users.id"], name=op.f("fk_messages_receiver_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["sender_id"], ["users.id"], name=op.f("fk_messages_sender_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index("ix_messages_pair", "messages", ["sender_id", "receiver_id"], unique=False)
    op.create_table(
        "scores",
        sa.Column("mentee_id", sa.BigInteger(), nullable=False),
        sa.Column("mentor_id", sa.BigInteger(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mentee_id"], ["users.id"], name=op.f("fk_scores_mentee_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["mentor_id"], ["users.id"], name=op.f("fk_scores_mentor_id_users")
        ),
        sa.PrimaryKeyConstraint("mentee_id", "mentor_id", name=op.f("pk_scores")),
    )
    op.create_index("ix_scores_mentor_id", "scores", ["mentor_id"], unique=False)
    op.create_table(
        "mentor_mentee_stats",
        sa.Column("relationship_id", sa.BigInteger(), nullable=False),
        sa.Column("total_bookings", sa.Integer(), server_default="0", nullable=False),
        sa.Column("completed_sessions", sa.Integer(), server_default="0", nullable=False),
        sa.Column("confirmed_sessions", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pending_sessions", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cancelled_sessions", sa.Integer(), server_default="0", nullable=False),
        sa.Column("first_session_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_session_date", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["relationship_id"],
            ["mentor_mentee.id"],
            name=op.f("fk_mentor_mentee_stats_relationship_id_mentor_mentee"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("relationship_id", name=op.f("pk_mentor_mentee_stats")),
    )


def downgrade() -> None:
    op.drop_table("mentor_mentee_stats")
    op.drop_table("scores")
    op.drop_table("messages")
    op.drop_table("mentor_mentee")
    op.drop_table("mentor_blacklist")
    op.drop_table("bookings")
