"""`mentorship.rebuild_stats`: booking statistics per relationship, recomputed in one statement."""

from __future__ import annotations

from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.locks import hold_advisory_lock
from core.results import TaskResult
from core.sql import set_local
from models import Booking, MentorMentee, MentorMenteeStats
from models.mentorship import BookingStatus

# Rebuilds take turns: a rebuild that read an older snapshot must not overwrite the
# counts of one that read a newer one.
REBUILD_LOCK = "matchops.mentorship.rebuild_stats"
REBUILD_WORK_MEM = "64MB"


class RebuildStatsResult(TaskResult):
    """The result of `mentorship.rebuild_stats`: relationships covered, rows changed."""

    relationships: int
    changed: int


def rebuild_stats(session: Session) -> RebuildStatsResult:
    """Rewrite `mentor_mentee_stats` from `bookings` with one INSERT … ON CONFLICT DO UPDATE.

    Every relationship gets a row; one whose pair has no bookings gets zeros and no
    dates, so readers never need to tell "no row" from "no bookings". Session dates span
    the bookings that are not cancelled (a cancelled session never took place). Rows
    whose values are unchanged are not rewritten; rows of deleted relationships go with
    them (ON DELETE CASCADE). Result: relationships covered and rows actually changed.
    """
    hold_advisory_lock(session, REBUILD_LOCK)
    # Lets the per-pair aggregate of a million bookings (about 100,000 groups) hash in
    # memory; with the 4 MB default PostgreSQL walks the pair index instead, which is slower.
    set_local(session, {"work_mem": REBUILD_WORK_MEM})
    held = Booking.status != BookingStatus.CANCELLED
    per_pair = (
        select(
            Booking.mentor_id,
            Booking.mentee_id,
            func.count().label("total_bookings"),
            func.count()
            .filter(Booking.status == BookingStatus.COMPLETED)
            .label("completed_sessions"),
            func.count()
            .filter(Booking.status == BookingStatus.CONFIRMED)
            .label("confirmed_sessions"),
            func.count().filter(Booking.status == BookingStatus.PENDING).label("pending_sessions"),
            func.count()
            .filter(Booking.status == BookingStatus.CANCELLED)
            .label("cancelled_sessions"),
            func.min(Booking.booked_date).filter(held).label("first_session_date"),
            func.max(Booking.booked_date).filter(held).label("last_session_date"),
        )
        .group_by(Booking.mentor_id, Booking.mentee_id)
        .subquery("per_pair")
    )
    fresh = (
        select(
            MentorMentee.id.label("relationship_id"),
            func.coalesce(per_pair.c.total_bookings, 0).label("total_bookings"),
            func.coalesce(per_pair.c.completed_sessions, 0).label("completed_sessions"),
            func.coalesce(per_pair.c.confirmed_sessions, 0).label("confirmed_sessions"),
            func.coalesce(per_pair.c.pending_sessions, 0).label("pending_sessions"),
            func.coalesce(per_pair.c.cancelled_sessions, 0).label("cancelled_sessions"),
            per_pair.c.first_session_date,
            per_pair.c.last_session_date,
        )
        .outerjoin(
            per_pair,
            and_(
                per_pair.c.mentor_id == MentorMentee.mentor_id,
                per_pair.c.mentee_id == MentorMentee.mentee_id,
            ),
        )
        .cte("fresh")
    )
    columns = [
        "total_bookings",
        "completed_sessions",
        "confirmed_sessions",
        "pending_sessions",
        "cancelled_sessions",
        "first_session_date",
        "last_session_date",
    ]
    upsert = insert(MentorMenteeStats).from_select(["relationship_id", *columns], select(fresh))
    current = tuple_(*(getattr(MentorMenteeStats, c) for c in columns))
    incoming = tuple_(*(getattr(upsert.excluded, c) for c in columns))
    changed = (
        upsert.on_conflict_do_update(
            index_elements=[MentorMenteeStats.relationship_id],
            set_={c: getattr(upsert.excluded, c) for c in columns},
            where=current.is_distinct_from(incoming),
        )
        .returning(MentorMenteeStats.relationship_id)
        .cte("changed")
    )
    row = session.execute(
        select(
            select(func.count()).select_from(fresh).scalar_subquery().label("relationships"),
            select(func.count()).select_from(changed).scalar_subquery().label("changed"),
        )
    ).one()
    return {"relationships": int(row.relationships), "changed": int(row.changed)}
