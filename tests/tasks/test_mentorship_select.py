"""`mentorship.select`: a mentee picks a mentor; every rule and error, and re-runs."""

from __future__ import annotations

import pytest

from core.errors import Conflict, Forbidden, MatchingError, NotFound
from tests.factories import events_of, make_user, next_id
from tests.factories_mentorship import (
    blacklist,
    find_relationship,
    make_mentee,
    make_mentor,
    make_relationship,
    relationship_between,
)
from tests.support import run_task


def test_select_creates_an_active_relationship_and_one_event(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    db.commit()

    result = run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)

    relationship = relationship_between(db, mentor.id, mentee.id)
    assert result == {"relationship_id": relationship.id, "status": "active"}
    assert relationship.status == "active"
    assert relationship.initiated_by == "mentee"
    assert relationship.accepted_at is not None
    assert relationship.completed_at is None
    (event,) = events_of(db, "mentorship.matched", relationship_id=relationship.id)
    assert event == {
        "relationship_id": relationship.id,
        "mentor_id": mentor.id,
        "mentee_id": mentee.id,
        "initiated_by": "mentee",
        "source": "select",
    }


def test_selecting_the_same_mentor_again_returns_the_same_result_without_a_new_event(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    db.commit()

    first = run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)
    second = run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)

    assert second == first
    assert len(events_of(db, "mentorship.matched", relationship_id=first["relationship_id"])) == 1


def test_mentee_with_an_active_mentor_cannot_select_another(worker, db):
    mentee, current, other = make_mentee(db), make_mentor(db), make_mentor(db)
    make_relationship(db, current, mentee, status="active")
    db.commit()

    with pytest.raises(MatchingError, match=r"^You are already matched with a mentor$"):
        run_task("mentorship.select", mentee_id=mentee.id, mentor_id=other.id)


def test_unknown_mentor_is_not_found(worker, db):
    mentee = make_mentee(db)
    db.commit()

    with pytest.raises(NotFound, match=r"^Mentor not found$") as raised:
        run_task("mentorship.select", mentee_id=mentee.id, mentor_id=next_id())
    assert raised.value.status == 404


def test_inactive_mentor_is_not_found(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db, is_active=False)
    db.commit()

    with pytest.raises(NotFound, match=r"^Mentor not found$"):
        run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)


def test_unknown_mentee_is_not_found(worker, db):
    mentor = make_mentor(db)
    db.commit()

    with pytest.raises(NotFound, match=r"^Mentee not found$"):
        run_task("mentorship.select", mentee_id=next_id(), mentor_id=mentor.id)


def test_selected_user_must_be_a_mentor(worker, db):
    mentee, member = make_mentee(db), make_user(db, role="member")
    db.commit()

    with pytest.raises(MatchingError, match=r"^Selected user is not a mentor$") as raised:
        run_task("mentorship.select", mentee_id=mentee.id, mentor_id=member.id)
    assert raised.value.status == 400


def test_blacklisted_mentor_is_forbidden(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    blacklist(db, mentee, mentor)
    db.commit()

    with pytest.raises(Forbidden, match="unmatched this mentor") as raised:
        run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)
    assert raised.value.status == 403
    assert find_relationship(db, mentor.id, mentee.id) is None


def test_full_mentor_is_a_conflict(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db, max_mentees=1)
    make_relationship(db, mentor, make_mentee(db), status="active")
    db.commit()

    with pytest.raises(Conflict, match="1 of 1 places are taken") as raised:
        run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)
    assert raised.value.status == 409


def test_default_capacity_applies_when_max_mentees_is_unset(worker, db):
    # MAX_MENTEES is 2 by default.
    mentor = make_mentor(db)
    for _ in range(2):
        make_relationship(db, mentor, make_mentee(db), status="active")
    mentee = make_mentee(db)
    db.commit()

    with pytest.raises(Conflict, match="2 of 2 places are taken"):
        run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)


def test_paused_relationships_do_not_take_a_place(worker, db):
    mentor = make_mentor(db, max_mentees=1)
    make_relationship(db, mentor, make_mentee(db), status="paused")
    mentee = make_mentee(db)
    db.commit()

    result = run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)

    assert result["status"] == "active"


def test_unavailable_mentor_is_a_conflict(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db, mentor_available=False)
    db.commit()

    with pytest.raises(Conflict, match="not accepting new mentees"):
        run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)


def test_selecting_oneself_is_refused(worker, db):
    mentor = make_mentor(db)
    db.commit()

    with pytest.raises(MatchingError, match="your own mentor"):
        run_task("mentorship.select", mentee_id=mentor.id, mentor_id=mentor.id)


@pytest.mark.parametrize("earlier", ["pending", "rejected", "completed"])
def test_an_earlier_relationship_of_the_pair_is_reopened_as_active(worker, db, earlier):
    mentee, mentor = make_mentee(db), make_mentor(db)
    old = make_relationship(db, mentor, mentee, status=earlier, initiated_by="mentor")
    db.commit()

    result = run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)

    assert result == {"relationship_id": old.id, "status": "active"}
    relationship = relationship_between(db, mentor.id, mentee.id)
    assert relationship.initiated_by == "mentee"
    assert relationship.accepted_at is not None
    assert relationship.completed_at is None
    assert len(events_of(db, "mentorship.matched", relationship_id=old.id)) == 1


def test_a_paused_relationship_of_the_pair_must_be_resumed_instead(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    make_relationship(db, mentor, mentee, status="paused")
    db.commit()

    with pytest.raises(Conflict, match=r"paused; resume it with mentorship\.set_status"):
        run_task("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)


def test_ids_must_be_positive(worker):
    with pytest.raises(MatchingError, match="mentor_id"):
        run_task("mentorship.select", mentee_id=1, mentor_id=0)
