"""Peer practice: question bank, pairing requests, matches and collaboration sessions."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, StatusText


class RequestStatus(StrEnum):
    """Where a pairing request stands (`match_requests.status`)."""

    PENDING = "pending"
    MATCHED = "matched"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class MatchStatus(StrEnum):
    """Where a proposed match stands (`matches.status`)."""

    PENDING_CONFIRMATION = "pending_confirmation"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class SessionStatus(StrEnum):
    """Whether a collaboration session still has someone in it (`collab_sessions.status`)."""

    ACTIVE = "active"
    ENDED = "ended"


class Question(Base):
    """An interview question; `topics` lists every topic it fits."""

    __tablename__ = "questions"
    __table_args__ = (Index("ix_questions_topics", "topics", postgresql_using="gin"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    difficulty: Mapped[str] = mapped_column(Text)  # Easy | Medium | Hard
    topics: Mapped[list[str]] = mapped_column(ARRAY(Text))


class MatchRequest(Base):
    """A user asking for a partner in one pool (difficulty + topic)."""

    __tablename__ = "match_requests"
    __table_args__ = (
        # One open request per user, enforced by the database, not by a check-then-insert.
        Index(
            "uq_match_requests_open_user",
            "user_id",
            unique=True,
            postgresql_where=text("status IN ('pending', 'matched')"),
        ),
        # The sweep reads each pool's pending requests oldest first, and a topic's pools
        # together.
        Index(
            "ix_match_requests_pending_pool",
            "topic",
            "difficulty",
            "created_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # The expiry scan reads pending requests by age across every pool.
        Index(
            "ix_match_requests_pending_created",
            "created_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # Pool figures count recent expiries. Partial, so a sweep's updates (which
        # leave requests pending or matched) never write to it.
        Index(
            "ix_match_requests_expired_at",
            "expired_at",
            postgresql_where=text("status = 'expired'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    difficulty: Mapped[str] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(Text)
    status: Mapped[RequestStatus] = mapped_column(
        StatusText(RequestStatus), server_default=RequestStatus.PENDING.value
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Not indexed: every sweep rewrites this column for each request it pairs, and the
    # match names its two requests (`matches.request_a`/`request_b`) for lookups.
    match_id: Mapped[uuid.UUID | None]
    # When an innocent side went back to pending. It keeps `created_at` (its place in
    # the pool) but gets a fresh matching timeout from here.
    requeued_at: Mapped[datetime | None]
    # When the request expired (NULL otherwise), for the pools' expiry rates.
    expired_at: Mapped[datetime | None]


class Match(Base):
    """Two requests paired by a sweep, waiting for both sides to confirm."""

    __tablename__ = "matches"
    __table_args__ = (
        Index(
            "ix_matches_open_deadline",
            "confirm_deadline",
            postgresql_where=text("status = 'pending_confirmation'"),
        ),
        # Pool figures and `peer.explain` read the matches of a recent window. BRIN:
        # matches arrive in created_at order, and a block range summary costs a sweep's
        # bulk insert almost nothing, where a B-tree (by pool, say) would be maintained
        # row by row through every sweep's write of its matches.
        Index("ix_matches_created_brin", "created_at", postgresql_using="brin"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    # No foreign keys here: both users come from requests, whose own foreign key already
    # vouches for them, and checking again costs more than the rest of a bulk sweep.
    user_a: Mapped[int] = mapped_column(BigInteger)
    user_b: Mapped[int] = mapped_column(BigInteger)
    difficulty: Mapped[str] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(Text)
    status: Mapped[MatchStatus] = mapped_column(
        StatusText(MatchStatus), server_default=MatchStatus.PENDING_CONFIRMATION.value
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    confirm_deadline: Mapped[datetime]
    session_id: Mapped[uuid.UUID | None]
    # The two requests a sweep paired (NULL for matches made elsewhere), so every
    # request's matches can be audited.
    request_a: Mapped[uuid.UUID | None]
    request_b: Mapped[uuid.UUID | None]
    # Each side's answer: NULL until given, then yes (true) or no (false).
    confirmed_a: Mapped[bool | None]
    confirmed_b: Mapped[bool | None]


class CollabSession(Base):
    """A coding session for a confirmed match."""

    __tablename__ = "collab_sessions"
    __table_args__ = (
        # Question choice prefers the least-used question of a pool.
        Index("ix_collab_sessions_question_id", "question_id"),
        # Reconcile rewrites the Redis keys of active sessions only.
        Index("ix_collab_sessions_active", "id", postgresql_where=text("status = 'active'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    match_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("matches.id"), unique=True)
    question_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("questions.id"))
    language: Mapped[str] = mapped_column(Text, server_default="python")
    user_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    status: Mapped[SessionStatus] = mapped_column(
        StatusText(SessionStatus), server_default=SessionStatus.ACTIVE.value
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class PeerDecline(Base):
    """Two users one of whom declined a match with the other; the sweep keeps them apart
    for an hour. One row per unordered pair (`user_low` < `user_high`), refreshed on
    every new decline."""

    __tablename__ = "peer_declines"
    __table_args__ = (
        CheckConstraint("user_low < user_high", name="ordered_pair"),
        Index("ix_peer_declines_declined_at", "declined_at"),
    )

    user_low: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), primary_key=True)
    user_high: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), primary_key=True)
    declined_at: Mapped[datetime] = mapped_column(server_default=func.now())


class MatchReservation(Base):
    """Part of the open-match cap held by one sweep between counting it and writing its
    matches. A sweep deletes its row in the transaction that writes the matches, so open
    matches plus live reservations never exceed the cap; a row older than the task time
    limit belongs to a sweep that died and no longer counts."""

    __tablename__ = "peer_match_reservations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    pairs: Mapped[int] = mapped_column(CheckConstraint("pairs > 0", name="positive_pairs"))
    reserved_at: Mapped[datetime] = mapped_column(server_default=func.now())
