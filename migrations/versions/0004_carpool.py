"""Carpool: networks, groups, members, reservations, invitations, matches, stats.

Revision ID: 0004_carpool
Revises: 0003_mentorship
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_carpool"
down_revision: str | None = "0003_mentorship"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "carpool_groups",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("enterprise_id", sa.BigInteger(), nullable=True),
        sa.Column("disabled", sa.Boolean(), server_default="false", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_carpool_groups")),
    )
    op.create_index(
        op.f("ix_carpool_groups_enterprise_id"), "carpool_groups", ["enterprise_id"], unique=False
    )
    op.create_table(
        "carpool_networks",
        sa.Column("network_id", sa.BigInteger(), nullable=False),
        sa.Column("enterprise_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("network_id", "enterprise_id", name=op.f("pk_carpool_networks")),
    )
    op.create_index(
        "ix_carpool_networks_enterprise_id", "carpool_networks", ["enterprise_id"], unique=False
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["carpool_groups.id"],
            name=op.f("fk_group_members_group_id_carpool_groups"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_group_members_user_id_users")
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_members")),
    )
    op.create_index("ix_group_members_user_id", "group_members", ["user_id"], unique=False)
    op.create_table(
        "reservations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default="searching", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_reservations_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
    )
    op.create_index("ix_reservations_user_id", "reservations", ["user_id"], unique=False)
    op.create_table(
        "invitations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("reservation_id", sa.BigInteger(), nullable=False),
        sa.Column("offer_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["offer_id"], ["reservations.id"], name=op.f("fk_invitations_offer_id_reservations")
        ),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.id"],
            name=op.f("fk_invitations_reservation_id_reservations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
    )
    op.create_index("ix_invitations_offer_id", "invitations", ["offer_id"], unique=False)
    op.create_index(
        "ix_invitations_reservation_id", "invitations", ["reservation_id"], unique=False
    )
    op.create_table(
        "reservation_matches",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("reservation_id", sa.BigInteger(), nullable=False),
        sa.Column("matched_reservation_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["matched_reservation_id"],
            ["reservations.id"],
            name=op.f("fk_reservation_matches_matched_reservation_id_reservations"),
        ),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.id"],
            name=op.f("fk_reservation_matches_reservation_id_reservations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservation_matches")),
    )
    op.create_index(
        "ix_reservation_matches_matched_reservation_id",
        "reservation_matches",
        ["matched_reservation_id"],
        unique=False,
    )
    op.create_index(
        "ix_reservation_matches_reservation_id",
        "reservation_matches",
        ["reservation_id"],
        unique=False,
    )
    op.create_table(
        "reservation_stats",
        sa.Column("reservation_id", sa.BigInteger(), nullable=False),
        sa.Column("invite_sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("invite_received", sa.Integer(), server_default="0", nullable=False),
        sa.Column("matches", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "modified_on",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.id"],
            name=op.f("fk_reservation_stats_reservation_id_reservations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("reservation_id", name=op.f("pk_reservation_stats")),
    )


def downgrade() -> None:
    op.drop_table("reservation_stats")
    op.drop_table("reservation_matches")
    op.drop_table("invitations")
    op.drop_table("reservations")
    op.drop_table("group_members")
    op.drop_table("carpool_networks")
    op.drop_table("carpool_groups")
