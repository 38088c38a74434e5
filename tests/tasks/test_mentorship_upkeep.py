"""`mentorship.backfill` and `mentorship.rebuild_stats`: set-based upkeep, checked by recount."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from models import Booking, MentorMentee, MentorMenteeStats
from tests.factories import events_of
from tests.factories_mentorship import (
    book,
    find_relationship,
    make_mentee,
    make_mentor,
    make_relationship,
    relationship_between,
)
from tests.support import run_task, send

DAY = datetime(2025, 3, 1, tzinfo=UTC)
STATUSES = ("pending", "confirmed", "completed", "cancelled")


def test_backfill_creates_one_active_system_relationship_per_booked_pair(worker, db):
    mentor = make_mentor(db)
    booked, only_cancelled, related = make_mentee(db), make_mentee(db), make_mentee(db)
    book(db, mentor, booked, "completed", DAY)
    book(db, mentor, booked, "pending", DAY + timedelta(days=1))
    book(db, mentor, only_cancelled, "cancelled", DAY)
    existing = make_relationship(db, mentor, related, status="completed")
    book(db, mentor, related, "confirmed", DAY)
    db.commit()

    first = run_task("mentorship.backfill")
    second = run_task("mentorship.backfill")

    assert first["created"] >= 1
    assert second == {"created": 0}
    created = relationship_between(db, mentor.id, booked.id)
    assert created.status == "active"
    assert created.initiated_by == "system"
    assert created.accepted_at is not None
    assert find_relationship(db, mentor.id, only_cancelled.id) is None
    assert relationship_between(db, mentor.id, related.id).id == existing.id
    assert relationship_between(db, mentor.id, related.id).status == "completed"
    (event,) = events_of(db, "mentorship.matched", relationship_id=created.id)
    assert event["source"] == "backfill"


def test_backfill_keeps_one_active_mentor_per_mentee(worker, db):
    mentee = make_mentee(db)
    older, newer = make_mentor(db), make_mentor(db)
    book(db, older, mentee, "completed", DAY)
    book(db, newer, mentee, "confirmed", DAY + timedelta(days=7))
    matched = make_mentee(db)
    current, booked_other = make_mentor(db), make_mentor(db)
    make_relationship(db, current, matched, status="active")
    book(db, booked_other, matched, "completed", DAY)
    db.commit()

    run_task("mentorship.backfill")

    # The most recently booked mentor becomes the active one.
    assert relationship_between(db, newer.id, mentee.id).status == "active"
    assert find_relationship(db, older.id, mentee.id) is None
    assert find_relationship(db, booked_other.id, matched.id) is None


def test_two_backfills_at_once_create_each_relationship_once(worker, db):
    mentor, mentee = make_mentor(db), make_mentee(db)
    book(db, mentor, mentee, "confirmed", DAY)
    db.commit()

    first, second = send("mentorship.backfill"), send("mentorship.backfill")
    first.get(timeout=60)
    second.get(timeout=60)

    created = relationship_between(db, mentor.id, mentee.id)
    assert len(events_of(db, "mentorship.matched", relationship_id=created.id)) == 1


def _recount(db, relationship: MentorMentee) -> dict:
    """The statistics of one relationship, counted in Python from its bookings."""
    bookings = db.scalars(
        select(Booking).where(
            Booking.mentor_id == relationship.mentor_id,
            Booking.mentee_id == relationship.mentee_id,
        )
    ).all()
    held = [b.booked_date for b in bookings if b.status != "cancelled"]
    return {
        "total_bookings": len(bookings),
        "completed_sessions": sum(b.status == "completed" for b in bookings),
        "confirmed_sessions": sum(b.status == "confirmed" for b in bookings),
        "pending_sessions": sum(b.status == "pending" for b in bookings),
        "cancelled_sessions": sum(b.status == "cancelled" for b in bookings),
        "first_session_date": min(held, default=None),
        "last_session_date": max(held, default=None),
    }


def _stored(db, relationship_id: int) -> dict | None:
    row = db.get(MentorMenteeStats, relationship_id)
    if row is None:
        return None
    return {
        "total_bookings": row.total_bookings,
        "completed_sessions": row.completed_sessions,
        "confirmed_sessions": row.confirmed_sessions,
        "pending_sessions": row.pending_sessions,
        "cancelled_sessions": row.cancelled_sessions,
        "first_session_date": row.first_session_date,
        "last_session_date": row.last_session_date,
    }


def test_rebuild_stats_matches_a_plain_recount(worker, db):
    rng = random.Random(7)
    relationships = []
    for _ in range(12):
        mentor, mentee = make_mentor(db), make_mentee(db)
        relationships.append(
            make_relationship(db, mentor, mentee, status=rng.choice(["active", "completed"]))
        )
        for _ in range(rng.randint(0, 8)):
            book(
                db, mentor, mentee, rng.choice(STATUSES), DAY + timedelta(hours=rng.randint(0, 900))
            )
    # A stale row that the rebuild must correct, and bookings of an unrelated pair.
    db.add(MentorMenteeStats(relationship_id=relationships[0].id, total_bookings=99))
    book(db, make_mentor(db), make_mentee(db), "completed", DAY)
    db.commit()

    result = run_task("mentorship.rebuild_stats")

    assert result["relationships"] >= len(relationships)
    assert result["changed"] >= len(relationships)
    db.expire_all()
    for relationship in relationships:
        assert _stored(db, relationship.id) == _recount(db, relationship)


def test_a_relationship_without_bookings_gets_a_row_of_zeros(worker, db):
    relationship = make_relationship(db, make_mentor(db), make_mentee(db), status="active")
    db.commit()

    run_task("mentorship.rebuild_stats")

    db.expire_all()
    assert _stored(db, relationship.id) == {
        "total_bookings": 0,
        "completed_sessions": 0,
        "confirmed_sessions": 0,
        "pending_sessions": 0,
        "cancelled_sessions": 0,
        "first_session_date": None,
        "last_session_date": None,
    }


def test_rebuild_follows_changed_bookings_and_a_rerun_changes_nothing(worker, db):
    mentor, mentee = make_mentor(db), make_mentee(db)
    relationship = make_relationship(db, mentor, mentee, status="active")
    first = book(db, mentor, mentee, "confirmed", DAY)
    book(db, mentor, mentee, "completed", DAY + timedelta(days=2))
    db.commit()
    run_task("mentorship.rebuild_stats")

    db.execute(delete(Booking).where(Booking.id == first.id))
    db.commit()
    run_task("mentorship.rebuild_stats")
    again = run_task("mentorship.rebuild_stats")

    db.expire_all()
    assert _stored(db, relationship.id) == _recount(db, relationship)
    stored = _stored(db, relationship.id)
    assert stored is not None
    assert stored["first_session_date"] == DAY + timedelta(days=2)
    assert again["changed"] == 0


def test_two_rebuilds_at_once_agree_with_a_recount(worker, db):
    mentor, mentee = make_mentor(db), make_mentee(db)
    relationship = make_relationship(db, mentor, mentee, status="active")
    for day in range(5):
        book(db, mentor, mentee, STATUSES[day % 4], DAY + timedelta(days=day))
    db.commit()

    first, second = send("mentorship.rebuild_stats"), send("mentorship.rebuild_stats")
    first.get(timeout=60)
    second.get(timeout=60)

    db.expire_all()
    assert _stored(db, relationship.id) == _recount(db, relationship)
