"""`mentorship.assign`: optimal, within every rule, idempotent and safe beside selections.

`assign` works on every seeking mentee, so each test first stops everyone else's
mentees from seeking; pytest runs tests one at a time.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from core.errors import Conflict
from models import MentorMentee, Score, User
from tests.domain.mentorship.brute_force import brute_force_best
from tests.factories import events_of
from tests.factories_mentorship import (
    active_mentees_of,
    find_relationship,
    holding_user_row,
    make_excluded_mentors,
    make_mentee,
    make_mentor,
    make_relationship,
    relationship_between,
    set_score,
)
from tests.support import lock_waiters, run_task, send, wait_for

JOINED = datetime(2021, 6, 1, tzinfo=UTC)


@pytest.fixture
def nobody_else_seeking(db):
    """Only the mentees a test creates are seeking a mentor."""
    db.execute(update(User).where(User.seeking_mentor).values(seeking_mentor=False))
    db.commit()


def _seeker(db, **fields):
    return make_mentee(db, seeking_mentor=True, **fields)


def _active_pairs(db, mentee_ids) -> dict[int, int]:
    db.expire_all()
    rows = db.execute(
        select(MentorMentee.mentee_id, MentorMentee.mentor_id).where(
            MentorMentee.mentee_id.in_(mentee_ids), MentorMentee.status == "active"
        )
    ).all()
    return dict(rows)


def test_assignment_is_optimal_on_random_instances_through_the_worker(
    worker, db, nobody_else_seeking
):
    rng = random.Random(20261122)
    for _ in range(12):
        mentees = [_seeker(db) for _ in range(rng.randint(2, 5))]
        room = {
            make_mentor(db, max_mentees=n).id: n for n in rng.choices(range(3), k=rng.randint(1, 3))
        }
        edges = []
        for mentee in mentees:
            for mentor_id in room:
                if rng.random() < 0.75:
                    score = round(rng.uniform(-1, 5), 3)
                    db.add(Score(mentee_id=mentee.id, mentor_id=mentor_id, score=score))
                    edges.append((mentee.id, mentor_id, score))
        db.commit()

        result = run_task("mentorship.assign")

        best = brute_force_best(edges, room)
        assert result["total_score"] == pytest.approx(best, abs=1e-6)
        pairs = _active_pairs(db, [m.id for m in mentees])
        assert result["assigned"] == len(pairs)
        scores = {(a, b): s for a, b, s in edges}
        assert sum(scores[(mentee, mentor)] for mentee, mentor in pairs.items()) == pytest.approx(
            best, abs=1e-6
        )
        for mentor_id, places in room.items():
            assert list(pairs.values()).count(mentor_id) <= places
        # The next instance starts from nobody seeking again.
        db.execute(update(User).where(User.seeking_mentor).values(seeking_mentor=False))
        db.commit()


def test_beats_first_come_greedy(worker, db, nobody_else_seeking):
    # Greedy, best score first, gives A to mentee 1 (10) and leaves mentee 2 with
    # nothing; the optimum gives A to mentee 2 and B to mentee 1 (9 + 8).
    one, two = _seeker(db), _seeker(db)
    a, b = make_mentor(db, max_mentees=1), make_mentor(db, max_mentees=1)
    set_score(db, one, a, 10)
    set_score(db, one, b, 9)
    set_score(db, two, a, 8)
    db.commit()

    result = run_task("mentorship.assign")

    assert result == {"assigned": 2, "total_score": 17.0}
    assert _active_pairs(db, [one.id, two.id]) == {one.id: b.id, two.id: a.id}


def test_writes_active_system_relationships_with_events_and_a_rerun_adds_nothing(
    worker, db, nobody_else_seeking
):
    mentee, mentor = _seeker(db), make_mentor(db)
    set_score(db, mentee, mentor, 0.8)
    db.commit()

    first = run_task("mentorship.assign")
    second = run_task("mentorship.assign")

    assert first == {"assigned": 1, "total_score": 0.8}
    assert second == {"assigned": 0, "total_score": 0.0}
    relationship = relationship_between(db, mentor.id, mentee.id)
    assert relationship.status == "active"
    assert relationship.initiated_by == "system"
    assert relationship.accepted_at is not None
    (event,) = events_of(db, "mentorship.matched", relationship_id=relationship.id)
    assert event["source"] == "assign"
    assert event["initiated_by"] == "system"


def test_every_exclusion_of_rank_applies(worker, db, nobody_else_seeking):
    mentee = _seeker(db)
    rejected_before = make_mentor(db)
    make_relationship(db, rejected_before, mentee, status="rejected")
    for mentor in (*make_excluded_mentors(db, mentee), rejected_before):
        set_score(db, mentee, mentor, 5.0)
    make_mentor(db)
    negative = make_mentor(db)
    set_score(db, mentee, negative, -1.0)
    db.commit()

    result = run_task("mentorship.assign")

    assert result == {"assigned": 0, "total_score": 0.0}
    # Not even the mentor without a score, whom rank would list at 0.
    assert _active_pairs(db, [mentee.id]) == {}


def test_only_seeking_active_unmatched_mentees_are_assigned(worker, db, nobody_else_seeking):
    mentor = make_mentor(db, max_mentees=5)
    seeking = _seeker(db)
    not_seeking = make_mentee(db, seeking_mentor=False)
    inactive = _seeker(db, is_active=False)
    matched = _seeker(db)
    make_relationship(db, make_mentor(db), matched, status="active")
    for mentee in (seeking, not_seeking, inactive, matched):
        set_score(db, mentee, mentor, 1.0)
    db.commit()

    result = run_task("mentorship.assign")

    assert result["assigned"] == 1
    assert _active_pairs(db, [seeking.id, not_seeking.id, inactive.id])[seeking.id] == mentor.id
    assert _active_pairs(db, [not_seeking.id, inactive.id]) == {}


def test_limit_caps_the_mentees_considered_earliest_joined_first(worker, db, nobody_else_seeking):
    mentor = make_mentor(db, max_mentees=5)
    mentees = [_seeker(db, date_joined=JOINED + timedelta(days=i)) for i in range(4)]
    for i, mentee in enumerate(mentees):
        # The latest joiners score best: a limit still takes the earliest.
        set_score(db, mentee, mentor, 1.0 + i)
    db.commit()

    result = run_task("mentorship.assign", limit=2)

    assert result == {"assigned": 2, "total_score": 3.0}
    assert set(_active_pairs(db, [m.id for m in mentees])) == {mentees[0].id, mentees[1].id}


def test_remaining_capacity_counts_existing_mentees(worker, db, nobody_else_seeking):
    mentor = make_mentor(db, max_mentees=2)
    make_relationship(db, mentor, make_mentee(db), status="active")
    low, high = _seeker(db), _seeker(db)
    set_score(db, low, mentor, 1.0)
    set_score(db, high, mentor, 2.0)
    db.commit()

    result = run_task("mentorship.assign")

    assert result == {"assigned": 1, "total_score": 2.0}
    assert _active_pairs(db, [low.id, high.id]) == {high.id: mentor.id}


def test_a_place_taken_after_planning_is_rechecked_under_lock(worker, db, nobody_else_seeking):
    mentor = make_mentor(db, max_mentees=1)
    planned, other = _seeker(db), make_mentee(db)
    set_score(db, planned, mentor, 3.0)
    db.commit()

    with holding_user_row(mentor.id) as holder:
        result = send("mentorship.assign")
        # assign has read its candidates and now waits for the mentor's row ...
        wait_for(lambda: lock_waiters() == 1, timeout=20, what="assign to wait for the mentor")
        # ... while a selection commits the last place.
        holder.add(
            MentorMentee(
                mentor_id=mentor.id, mentee_id=other.id, status="active", initiated_by="mentee"
            )
        )

    assert result.get(timeout=60) == {"assigned": 0, "total_score": 0.0}
    assert find_relationship(db, mentor.id, planned.id) is None


def test_assign_racing_selections_never_overfills_a_mentor(worker, db, nobody_else_seeking):
    mentor = make_mentor(db, max_mentees=2)
    seekers = [_seeker(db) for _ in range(3)]
    for seeker in seekers:
        set_score(db, seeker, mentor, 1.0)
    choosers = [make_mentee(db) for _ in range(2)]
    db.commit()

    with holding_user_row(mentor.id):
        results = [send("mentorship.assign")] + [
            send("mentorship.select", mentee_id=c.id, mentor_id=mentor.id) for c in choosers
        ]
        # Both worker processes hold one of the three tasks, waiting for the mentor's row.
        wait_for(lambda: lock_waiters() >= 2, timeout=20, what="two tasks to wait for the mentor")
    outcomes = [r.get(timeout=60, propagate=False) for r in results]

    assert active_mentees_of(db, mentor.id) == 2
    selections = outcomes[1:]
    assert all(isinstance(o, (dict, Conflict)) for o in selections)
    assigned = outcomes[0]["assigned"]
    assert assigned + sum(isinstance(o, dict) for o in selections) == 2


def test_two_assignment_runs_at_once_match_each_mentee_once(worker, db, nobody_else_seeking):
    mentors = [make_mentor(db, max_mentees=2) for _ in range(3)]
    mentees = [_seeker(db) for _ in range(5)]
    for i, mentee in enumerate(mentees):
        for j, mentor in enumerate(mentors):
            set_score(db, mentee, mentor, 1.0 + (i * 7 + j * 3) % 5)
    db.commit()

    first, second = send("mentorship.assign"), send("mentorship.assign")
    results = [first.get(timeout=60), second.get(timeout=60)]

    assert sorted(r["assigned"] for r in results) == [0, 5]
    pairs = _active_pairs(db, [m.id for m in mentees])
    assert len(pairs) == 5
    for mentee in mentees:
        assert len(events_of(db, "mentorship.matched", mentee_id=mentee.id)) == 1
