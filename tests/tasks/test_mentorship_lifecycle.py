"""`mentorship.set_status` and `mentorship.expire`: legal moves, timestamps, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import Conflict, Forbidden, NotFound
from core.settings import get_settings
from tests.factories import events_of, next_id
from tests.factories_mentorship import (
    make_mentee,
    make_mentor,
    make_relationship,
    relationship_between,
)
from tests.support import run_task

LONG_AGO = datetime(2024, 1, 1, tzinfo=UTC)


def _set(relationship, user, status):
    return run_task(
        "mentorship.set_status", relationship_id=relationship.id, user_id=user.id, status=status
    )


def test_pause_resume_complete_keeps_timestamps_right(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    relationship = make_relationship(
        db, mentor, mentee, status="active", accepted_at=LONG_AGO, updated_at=LONG_AGO
    )
    db.commit()

    assert _set(relationship, mentee, "paused") == {
        "relationship_id": relationship.id,
        "status": "paused",
    }
    paused = relationship_between(db, mentor.id, mentee.id)
    assert paused.updated_at > LONG_AGO
    assert paused.accepted_at == LONG_AGO
    assert paused.completed_at is None
    paused_at = paused.updated_at

    assert _set(relationship, mentor, "active")["status"] == "active"
    resumed = relationship_between(db, mentor.id, mentee.id)
    assert resumed.updated_at > paused_at
    # Resuming is not a new match: accepted_at stays, no event.
    assert resumed.accepted_at == LONG_AGO
    assert events_of(db, "mentorship.matched", relationship_id=relationship.id) == []

    assert _set(relationship, mentor, "completed")["status"] == "completed"
    completed = relationship_between(db, mentor.id, mentee.id)
    assert completed.completed_at is not None
    assert completed.completed_at == completed.updated_at


def test_a_paused_relationship_can_be_completed(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    relationship = make_relationship(db, mentor, mentee, status="paused")
    db.commit()

    assert _set(relationship, mentee, "completed")["status"] == "completed"
    assert relationship_between(db, mentor.id, mentee.id).completed_at is not None


@pytest.mark.parametrize(
    ("start", "wanted"),
    [
        ("pending", "active"),
        ("pending", "paused"),
        ("pending", "completed"),
        ("rejected", "active"),
        ("rejected", "completed"),
        ("completed", "active"),
        ("completed", "paused"),
    ],
)
def test_illegal_moves_are_conflicts(worker, db, start, wanted):
    mentee, mentor = make_mentee(db), make_mentor(db)
    relationship = make_relationship(db, mentor, mentee, status=start)
    db.commit()

    with pytest.raises(Conflict, match=f"A {start} relationship cannot become {wanted}") as raised:
        _set(relationship, mentor, wanted)
    assert raised.value.status == 409
    assert relationship_between(db, mentor.id, mentee.id).status == start


def test_asking_for_the_current_status_changes_nothing(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    relationship = make_relationship(db, mentor, mentee, status="paused", updated_at=LONG_AGO)
    db.commit()

    assert _set(relationship, mentee, "paused")["status"] == "paused"
    assert relationship_between(db, mentor.id, mentee.id).updated_at == LONG_AGO


def test_resuming_needs_a_free_place(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db, max_mentees=1)
    relationship = make_relationship(db, mentor, mentee, status="paused")
    make_relationship(db, mentor, make_mentee(db), status="active")
    db.commit()

    with pytest.raises(Conflict, match="no free place"):
        _set(relationship, mentee, "active")


def test_resuming_while_the_mentee_has_another_active_mentor_is_a_conflict(worker, db):
    mentee, mentor, other = make_mentee(db), make_mentor(db), make_mentor(db)
    relationship = make_relationship(db, mentor, mentee, status="paused")
    make_relationship(db, other, mentee, status="active")
    db.commit()

    with pytest.raises(Conflict, match="another active mentor"):
        _set(relationship, mentor, "active")


def test_only_the_two_parties_may_change_the_status(worker, db):
    mentee, mentor, stranger = make_mentee(db), make_mentor(db), make_mentee(db)
    relationship = make_relationship(db, mentor, mentee, status="active")
    db.commit()

    with pytest.raises(Forbidden, match="not part of this relationship"):
        _set(relationship, stranger, "paused")


def test_unknown_relationship_is_not_found(worker):
    with pytest.raises(NotFound, match="Relationship not found"):
        run_task("mentorship.set_status", relationship_id=next_id(), user_id=1, status="paused")


def test_expire_rejects_only_pending_requests_past_the_timeout(worker, db):
    timeout = timedelta(seconds=get_settings().mentorship_request_timeout_seconds)
    now = datetime.now(UTC)
    mentor = make_mentor(db, max_mentees=10)
    stale = make_relationship(
        db, mentor, make_mentee(db), status="pending", created_at=now - timeout - timedelta(hours=1)
    )
    fresh = make_relationship(
        db, mentor, make_mentee(db), status="pending", created_at=now - timeout + timedelta(hours=1)
    )
    old_active = make_relationship(
        db, mentor, make_mentee(db), status="active", created_at=now - 2 * timeout
    )
    db.commit()

    first = run_task("mentorship.expire")
    second = run_task("mentorship.expire")

    assert first["expired"] >= 1
    assert second == {"expired": 0}
    db.expire_all()
    assert relationship_between(db, mentor.id, stale.mentee_id).status == "rejected"
    assert relationship_between(db, mentor.id, stale.mentee_id).updated_at > now - timedelta(
        minutes=5
    )
    assert relationship_between(db, mentor.id, fresh.mentee_id).status == "pending"
    assert relationship_between(db, mentor.id, old_active.mentee_id).status == "active"
