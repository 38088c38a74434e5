"""`mentorship.request` and `mentorship.respond`: pending requests and their answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import Conflict, Forbidden, MatchingError, NotFound
from tests.factories import events_of, make_user, next_id
from tests.factories_mentorship import (
    blacklist,
    make_mentee,
    make_mentor,
    make_relationship,
    relationship_between,
)
from tests.support import run_task


def _request(mentor, mentee, initiated_by="mentee"):
    return run_task(
        "mentorship.request", mentor_id=mentor.id, mentee_id=mentee.id, initiated_by=initiated_by
    )


def test_request_creates_a_pending_relationship_and_repeats_return_it(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    db.commit()

    first = _request(mentor, mentee)
    second = _request(mentor, mentee)

    relationship = relationship_between(db, mentor.id, mentee.id)
    assert first == second == {"relationship_id": relationship.id, "status": "pending"}
    assert relationship.initiated_by == "mentee"
    assert relationship.accepted_at is None
    assert events_of(db, "mentorship.matched", relationship_id=relationship.id) == []


def test_mentor_accepts_a_mentee_request(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    db.commit()
    relationship_id = _request(mentor, mentee)["relationship_id"]

    result = run_task(
        "mentorship.respond", relationship_id=relationship_id, user_id=mentor.id, accept=True
    )
    again = run_task(
        "mentorship.respond", relationship_id=relationship_id, user_id=mentor.id, accept=True
    )

    assert result == again == {"relationship_id": relationship_id, "status": "active"}
    relationship = relationship_between(db, mentor.id, mentee.id)
    assert relationship.accepted_at is not None
    assert relationship.updated_at >= relationship.created_at
    (event,) = events_of(db, "mentorship.matched", relationship_id=relationship_id)
    assert event["source"] == "accept"
    assert event["initiated_by"] == "mentee"


def test_mentee_rejects_a_mentor_request(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    db.commit()
    relationship_id = _request(mentor, mentee, initiated_by="mentor")["relationship_id"]

    result = run_task(
        "mentorship.respond", relationship_id=relationship_id, user_id=mentee.id, accept=False
    )

    assert result == {"relationship_id": relationship_id, "status": "rejected"}
    with pytest.raises(Conflict, match="no longer pending: it is rejected"):
        run_task(
            "mentorship.respond", relationship_id=relationship_id, user_id=mentee.id, accept=True
        )


def test_the_requester_cannot_answer_their_own_request(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    db.commit()
    relationship_id = _request(mentor, mentee)["relationship_id"]

    with pytest.raises(Forbidden, match="Only the other party can respond") as raised:
        run_task(
            "mentorship.respond", relationship_id=relationship_id, user_id=mentee.id, accept=True
        )
    assert raised.value.status == 403


def test_a_stranger_cannot_answer(worker, db):
    mentee, mentor, stranger = make_mentee(db), make_mentor(db), make_mentor(db)
    db.commit()
    relationship_id = _request(mentor, mentee)["relationship_id"]

    with pytest.raises(Forbidden, match="not part of this relationship"):
        run_task(
            "mentorship.respond",
            relationship_id=relationship_id,
            user_id=stranger.id,
            accept=True,
        )


def test_unknown_relationship_is_not_found(worker):
    with pytest.raises(NotFound, match="Relationship not found"):
        run_task("mentorship.respond", relationship_id=next_id(), user_id=1, accept=True)


def make_mentee_committed(db):
    mentee = make_mentee(db)
    db.commit()
    return mentee


def test_accepting_when_the_mentor_filled_up_meanwhile_is_a_conflict(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db, max_mentees=1)
    db.commit()
    relationship_id = _request(mentor, mentee)["relationship_id"]
    run_task("mentorship.select", mentee_id=make_mentee_committed(db).id, mentor_id=mentor.id)

    with pytest.raises(Conflict, match="no free place"):
        run_task(
            "mentorship.respond", relationship_id=relationship_id, user_id=mentor.id, accept=True
        )
    assert relationship_between(db, mentor.id, mentee.id).status == "pending"


def test_accepting_for_a_mentee_matched_meanwhile_is_refused(worker, db):
    mentee, mentor, other = make_mentee(db), make_mentor(db), make_mentor(db)
    db.commit()
    relationship_id = _request(mentor, mentee)["relationship_id"]
    run_task("mentorship.select", mentee_id=mentee.id, mentor_id=other.id)

    with pytest.raises(MatchingError, match="This mentee is already matched with a mentor"):
        run_task(
            "mentorship.respond", relationship_id=relationship_id, user_id=mentor.id, accept=True
        )


def test_request_checks_the_blacklist(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    blacklist(db, mentee, mentor)
    db.commit()

    with pytest.raises(Forbidden, match="You unmatched this mentor before") as raised:
        _request(mentor, mentee, initiated_by="mentee")
    assert raised.value.status == 403
    with pytest.raises(Forbidden, match="This mentee unmatched you before"):
        _request(mentor, mentee, initiated_by="mentor")


def test_request_checks_capacity(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db, max_mentees=1)
    make_relationship(db, mentor, make_mentee(db), status="active")
    db.commit()

    with pytest.raises(Conflict, match="no free place") as raised:
        _request(mentor, mentee)
    assert raised.value.status == 409


def test_request_to_an_unknown_or_non_mentor_user(worker, db):
    mentee, member = make_mentee(db), make_user(db, role="member")
    db.commit()

    with pytest.raises(NotFound, match="Mentor not found"):
        run_task(
            "mentorship.request", mentor_id=next_id(), mentee_id=mentee.id, initiated_by="mentee"
        )
    with pytest.raises(MatchingError, match="Selected user is not a mentor"):
        _request(member, mentee)


def test_request_by_a_matched_mentee_or_for_one(worker, db):
    mentee, current, other = make_mentee(db), make_mentor(db), make_mentor(db)
    make_relationship(db, current, mentee, status="active")
    db.commit()

    with pytest.raises(MatchingError, match="You are already matched with a mentor"):
        _request(other, mentee, initiated_by="mentee")
    with pytest.raises(MatchingError, match="This mentee is already matched with a mentor"):
        _request(other, mentee, initiated_by="mentor")


def test_unavailable_mentor_refuses_mentee_requests_but_may_reach_out(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db, mentor_available=False)
    db.commit()

    with pytest.raises(Conflict, match="not accepting new mentees"):
        _request(mentor, mentee, initiated_by="mentee")
    assert _request(mentor, mentee, initiated_by="mentor")["status"] == "pending"


def test_a_rejected_pair_can_be_requested_again(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    long_ago = datetime.now(UTC) - timedelta(days=30)
    old = make_relationship(
        db, mentor, mentee, status="rejected", initiated_by="mentee", created_at=long_ago
    )
    db.commit()

    result = _request(mentor, mentee, initiated_by="mentor")

    assert result == {"relationship_id": old.id, "status": "pending"}
    relationship = relationship_between(db, mentor.id, mentee.id)
    assert relationship.initiated_by == "mentor"
    # The reopened request's age, and so its expiry, counts from the new request.
    assert relationship.created_at > long_ago + timedelta(days=29)


def test_initiated_by_must_be_mentor_or_mentee(worker, db):
    with pytest.raises(MatchingError, match="initiated_by"):
        run_task("mentorship.request", mentor_id=1, mentee_id=2, initiated_by="system")
