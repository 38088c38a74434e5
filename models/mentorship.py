"""Mentoring: compatibility scores, relationships, blacklists, chat and bookings."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Double,
    ForeignKey,
    Identity,
    Index,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, StatusText


class RelationshipStatus(StrEnum):
    """Where a mentor-mentee relationship stands (`mentor_mentee.status`)."""

    PENDING = "pending"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    REJECTED = "rejected"


class BookingStatus(StrEnum):
    """Where a booked mentoring session stands (`bookings.status`)."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Score(Base):
    """How well a mentor suits a mentee (higher is better)."""

    __tablename__ = "scores"
    __table_args__ = (Index("ix_scores_mentor_id", "mentor_id"),)

    mentee_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), primary_key=True)
    mentor_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), primary_key=True)
    score: Mapped[float] = mapped_column(Double)


class MentorMentee(Base):
    """A mentor-mentee relationship; at most one per pair."""

    __tablename__ = "mentor_mentee"
    __table_args__ = (
        UniqueConstraint("mentor_id", "mentee_id", name="uq_mentor_mentee_pair"),
        Index("ix_mentor_mentee_mentee_id", "mentee_id"),
        # One active mentor per mentee, held by the database even if two writers race.
        Index(
            "uq_mentor_mentee_active_mentee",
            "mentee_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
        # Capacity is a count of a mentor's active relationships, read on every selection.
        Index(
            "ix_mentor_mentee_active_mentor",
            "mentor_id",
            postgresql_where=text("status = 'active'"),
        ),
        # `mentorship.expire` scans only the pending tail.
        Index(
            "ix_mentor_mentee_pending_created",
            "created_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    mentor_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    mentee_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    status: Mapped[RelationshipStatus] = mapped_column(
        StatusText(RelationshipStatus), server_default=RelationshipStatus.PENDING.value
    )
    initiated_by: Mapped[str] = mapped_column(Text)  # mentor | mentee | system
    subscribe_to_quizzes: Mapped[bool] = mapped_column(default=True, server_default="true")
    subscribe_to_courses: Mapped[bool] = mapped_column(default=True, server_default="true")
    subscribe_to_subjects: Mapped[bool] = mapped_column(default=True, server_default="true")
    mentor_notes: Mapped[str | None] = mapped_column(Text)
    mentee_notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    accepted_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class MentorBlacklist(Base):
    """A mentor this mentee unmatched and must never be offered again."""

    __tablename__ = "mentor_blacklist"

    mentee_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), primary_key=True)
    mentor_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Message(Base):
    """A chat message between two users."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_pair", "sender_id", "receiver_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    sender_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    receiver_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Booking(Base):
    """A booked mentoring session."""

    __tablename__ = "bookings"
    __table_args__ = (Index("ix_bookings_pair", "mentor_id", "mentee_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    mentor_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    mentee_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    status: Mapped[BookingStatus] = mapped_column(StatusText(BookingStatus))
    booked_date: Mapped[datetime]


class MentorMenteeStats(Base):
    """Booking statistics per relationship, rebuilt from `bookings`."""

    __tablename__ = "mentor_mentee_stats"

    relationship_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("mentor_mentee.id", ondelete="CASCADE"), primary_key=True
    )
    total_bookings: Mapped[int] = mapped_column(server_default="0")
    completed_sessions: Mapped[int] = mapped_column(server_default="0")
    confirmed_sessions: Mapped[int] = mapped_column(server_default="0")
    pending_sessions: Mapped[int] = mapped_column(server_default="0")
    cancelled_sessions: Mapped[int] = mapped_column(server_default="0")
    first_session_date: Mapped[datetime | None]
    last_session_date: Mapped[datetime | None]
