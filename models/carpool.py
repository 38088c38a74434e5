"""Carpool: networks of enterprises, groups, reservations, invitations and statistics."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, StatusText


class MembershipStatus(StrEnum):
    """Whether a user is still in a group (`group_members.status`)."""

    ACTIVE = "active"
    LEFT = "left"


class ReservationStatus(StrEnum):
    """Where a ride request or offer stands (`reservations.status`)."""

    SEARCHING = "searching"
    MATCHED = "matched"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


class CarpoolNetwork(Base):
    """Enterprises in one network: their groups' members are eligible for each other."""

    __tablename__ = "carpool_networks"
    __table_args__ = (Index("ix_carpool_networks_enterprise_id", "enterprise_id"),)

    network_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    enterprise_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class CarpoolGroup(Base):
    """A group of users who may share rides; optionally an enterprise's group."""

    __tablename__ = "carpool_groups"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    enterprise_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    disabled: Mapped[bool] = mapped_column(default=False, server_default="false")


class GroupMember(Base):
    """A user's membership of a group."""

    __tablename__ = "group_members"
    __table_args__ = (Index("ix_group_members_user_id", "user_id"),)

    group_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("carpool_groups.id"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), primary_key=True)
    status: Mapped[MembershipStatus] = mapped_column(
        StatusText(MembershipStatus), server_default=MembershipStatus.ACTIVE.value
    )


class Reservation(Base):
    """A user's ride request or offer."""

    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    status: Mapped[ReservationStatus] = mapped_column(
        StatusText(ReservationStatus), server_default=ReservationStatus.SEARCHING.value
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Invitation(Base):
    """Reservation `reservation_id` invited reservation `offer_id`."""

    __tablename__ = "invitations"
    __table_args__ = (
        Index("ix_invitations_reservation_id", "reservation_id"),
        Index("ix_invitations_offer_id", "offer_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    reservation_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("reservations.id"))
    offer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("reservations.id"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ReservationMatch(Base):
    """Two reservations matched for a shared ride."""

    __tablename__ = "reservation_matches"
    __table_args__ = (
        Index("ix_reservation_matches_reservation_id", "reservation_id"),
        Index("ix_reservation_matches_matched_reservation_id", "matched_reservation_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    reservation_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("reservations.id"))
    matched_reservation_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("reservations.id"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ReservationStats(Base):
    """Invitation and match counts per reservation, rebuilt set-based."""

    __tablename__ = "reservation_stats"

    reservation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("reservations.id", ondelete="CASCADE"), primary_key=True
    )
    invite_sent: Mapped[int] = mapped_column(server_default="0")
    invite_received: Mapped[int] = mapped_column(server_default="0")
    matches: Mapped[int] = mapped_column(server_default="0")
    modified_on: Mapped[datetime] = mapped_column(server_default=func.now())
