"""Selections racing each other for real, on several worker processes against PostgreSQL.

To make sure the racers overlap, the test first locks the contested users row itself,
sends every selection, waits until they are all queued up behind that lock inside
PostgreSQL, and only then lets them go at once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.errors import Conflict, MatchingError
from models import MentorMentee
from tests.factories import events_of
from tests.factories_mentorship import (
    active_mentees_of,
    holding_user_row,
    make_mentee,
    make_mentor,
)
from tests.support import lock_waiters, running_worker, send, wait_for


def release_when_queued(user_id: int, names_and_args: list[tuple[str, dict[str, Any]]]) -> list:
    """Send every task while `user_id` is locked; release once all wait on it; return outcomes."""
    with holding_user_row(user_id):
        results = [send(name, **args) for name, args in names_and_args]
        wait_for(
            lambda: lock_waiters() >= len(results),
            timeout=20,
            what=f"all {len(results)} racers to be in flight",
        )
    return [r.get(timeout=60, propagate=False) for r in results]


def the_one_loser(outcomes: list) -> Exception:
    """The error of the single racer that lost, once exactly one has won."""
    wins = [o for o in outcomes if isinstance(o, dict)]
    losses = [o for o in outcomes if isinstance(o, Exception)]
    assert len(wins) == 1
    assert len(losses) == 1
    return losses[0]


def test_two_mentees_racing_for_the_last_place_exactly_one_wins(worker, db):
    mentor = make_mentor(db, max_mentees=1)
    first, second = make_mentee(db), make_mentee(db)
    db.commit()

    outcomes = release_when_queued(
        mentor.id,
        [
            ("mentorship.select", {"mentee_id": first.id, "mentor_id": mentor.id}),
            ("mentorship.select", {"mentee_id": second.id, "mentor_id": mentor.id}),
        ],
    )

    loss = the_one_loser(outcomes)
    assert isinstance(loss, Conflict)
    assert loss.status == 409
    assert active_mentees_of(db, mentor.id) == 1


def test_many_mentees_racing_on_four_processes_never_overfill_a_mentor(worker, db):
    mentor = make_mentor(db, max_mentees=2)
    mentees = [make_mentee(db) for _ in range(6)]
    db.commit()

    with running_worker("mentorship-race", concurrency=4):
        outcomes = release_when_queued(
            mentor.id,
            [("mentorship.select", {"mentee_id": m.id, "mentor_id": mentor.id}) for m in mentees],
        )

    assert sum(isinstance(o, dict) for o in outcomes) == 2
    assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, dict))
    assert active_mentees_of(db, mentor.id) == 2


def test_one_mentee_racing_two_selections_gets_at_most_one_mentor(worker, db):
    mentee = make_mentee(db)
    one, other = make_mentor(db), make_mentor(db)
    db.commit()

    outcomes = release_when_queued(
        mentee.id,
        [
            ("mentorship.select", {"mentee_id": mentee.id, "mentor_id": one.id}),
            ("mentorship.select", {"mentee_id": mentee.id, "mentor_id": other.id}),
        ],
    )

    loss = the_one_loser(outcomes)
    assert isinstance(loss, MatchingError)
    assert str(loss) == "You are already matched with a mentor"
    db.expire_all()
    active = db.scalars(
        select(MentorMentee).where(
            MentorMentee.mentee_id == mentee.id, MentorMentee.status == "active"
        )
    ).all()
    assert len(active) == 1
    assert len(events_of(db, "mentorship.matched", mentee_id=mentee.id)) == 1


def test_the_same_selection_twice_at_once_creates_one_relationship_and_one_event(worker, db):
    mentee, mentor = make_mentee(db), make_mentor(db)
    db.commit()
    args = {"mentee_id": mentee.id, "mentor_id": mentor.id}

    outcomes = release_when_queued(
        mentor.id, [("mentorship.select", args), ("mentorship.select", args)]
    )

    assert outcomes[0] == outcomes[1]
    assert outcomes[0]["status"] == "active"
    assert len(events_of(db, "mentorship.matched", mentee_id=mentee.id)) == 1
