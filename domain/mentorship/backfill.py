"""`mentorship.backfill`: relationships for pairs that met through bookings before they existed."""

from __future__ import annotations

from sqlalchemy import and_, exists, func, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.outbox import emit_events
from core.results import TaskResult
from domain.mentorship.relationships import matched_payload
from models import Booking, MentorMentee
from models.mentorship import BookingStatus, RelationshipStatus


class BackfillResult(TaskResult):
    """The result of `mentorship.backfill`: relationships created."""

    created: int


def backfill_relationships(session: Session) -> BackfillResult:
    """One active, system-initiated relationship per booked pair that has none, in one INSERT.

    Pairs come from bookings that are not cancelled. A mentee has at most one active
    mentor, so when a mentee has bookings with several such mentors (or already has an
    active mentor) only the pair with the most recent booking is created, and only if
    the mentee is not already matched; the unique indexes decide (ON CONFLICT DO NOTHING),
    which also makes a rerun, or two runs at once, create nothing twice. Capacity is not
    applied: the bookings show the relationship exists already.
    """
    booked = (
        select(
            Booking.mentor_id,
            Booking.mentee_id,
            func.max(Booking.booked_date).label("latest"),
        )
        .where(Booking.status != BookingStatus.CANCELLED)
        .group_by(Booking.mentor_id, Booking.mentee_id)
        .subquery("booked")
    )
    unrelated = (
        select(
            booked.c.mentor_id,
            booked.c.mentee_id,
            literal(RelationshipStatus.ACTIVE, MentorMentee.status.type),
            literal("system"),
            func.now(),
        )
        .where(
            ~exists().where(
                and_(
                    MentorMentee.mentor_id == booked.c.mentor_id,
                    MentorMentee.mentee_id == booked.c.mentee_id,
                )
            )
        )
        # Rows are inserted in this order, so the most recent pair claims the mentee.
        .order_by(booked.c.latest.desc(), booked.c.mentor_id)
    )
    rows = session.execute(
        insert(MentorMentee)
        .from_select(["mentor_id", "mentee_id", "status", "initiated_by", "accepted_at"], unrelated)
        .on_conflict_do_nothing()
        .returning(MentorMentee.id, MentorMentee.mentor_id, MentorMentee.mentee_id)
    ).all()
    emit_events(
        session,
        "mentorship.matched",
        [
            matched_payload(row.id, row.mentor_id, row.mentee_id, "system", "backfill")
            for row in rows
        ],
    )
    return {"created": len(rows)}
