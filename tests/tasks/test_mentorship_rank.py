"""`mentorship.rank`: order, exclusions, capacity and the shape of each item."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import NotFound
from core.settings import get_settings
from tests.factories import next_id
from tests.factories_mentorship import (
    make_excluded_mentors,
    make_mentee,
    make_mentor,
    make_relationship,
    set_score,
)
from tests.support import run_task

JOINED = datetime(2020, 1, 1, tzinfo=UTC)


def _ranked_ids(mentee_id: int, among: set[int]) -> list[int]:
    return [
        r["mentor_id"]
        for r in run_task("mentorship.rank", mentee_id=mentee_id)
        if r["mentor_id"] in among
    ]


def test_orders_by_score_then_date_joined(worker, db):
    mentee = make_mentee(db)
    early = make_mentor(db, date_joined=JOINED)
    late = make_mentor(db, date_joined=JOINED + timedelta(days=3))
    best = make_mentor(db, date_joined=JOINED + timedelta(days=9))
    set_score(db, mentee, early, 0.5)
    set_score(db, mentee, late, 0.5)
    set_score(db, mentee, best, 0.9)
    db.commit()

    ranked = _ranked_ids(mentee.id, {early.id, late.id, best.id})

    assert ranked == [best.id, early.id, late.id]


def test_item_shape_counts_active_mentees_and_capacity(worker, db):
    mentee = make_mentee(db)
    mentor = make_mentor(db, max_mentees=3, display_name="Ada", date_joined=JOINED)
    set_score(db, mentee, mentor, 0.75)
    make_relationship(db, mentor, make_mentee(db), status="active")
    # Paused and pending relationships do not take a place.
    make_relationship(db, mentor, make_mentee(db), status="paused")
    make_relationship(db, mentor, make_mentee(db), status="pending")
    db.commit()

    items = [
        r for r in run_task("mentorship.rank", mentee_id=mentee.id) if r["mentor_id"] == mentor.id
    ]

    assert len(items) == 1
    item = items[0]
    assert set(item) == {
        "mentor_id",
        "email",
        "display_name",
        "score",
        "date_joined",
        "current_mentees",
        "capacity",
    }
    assert item["email"] == mentor.email
    assert item["display_name"] == "Ada"
    assert item["score"] == 0.75
    assert datetime.fromisoformat(item["date_joined"]) == JOINED
    assert item["current_mentees"] == 1
    assert item["capacity"] == 3


def test_capacity_defaults_to_max_mentees_setting(worker, db):
    mentee = make_mentee(db)
    mentor = make_mentor(db)
    db.commit()

    (item,) = [
        r for r in run_task("mentorship.rank", mentee_id=mentee.id) if r["mentor_id"] == mentor.id
    ]

    assert item["capacity"] == get_settings().max_mentees


def test_leaves_out_every_excluded_kind_of_user(worker, db):
    mentee = make_mentee(db)
    shown = make_mentor(db)
    excluded = make_excluded_mentors(db, mentee)
    other_mentee = make_mentee(db)
    for mentor in (shown, *excluded):
        set_score(db, mentee, mentor, 0.9)
    db.commit()

    everyone = {shown.id, other_mentee.id, *(user.id for user in excluded)}
    assert _ranked_ids(mentee.id, everyone) == [shown.id]


def test_mentor_without_a_score_is_listed_with_score_zero_below_scored_ones(worker, db):
    mentee = make_mentee(db)
    unscored = make_mentor(db, date_joined=JOINED)
    low = make_mentor(db, date_joined=JOINED + timedelta(days=1))
    negative = make_mentor(db, date_joined=JOINED)
    set_score(db, mentee, low, 0.1)
    set_score(db, mentee, negative, -0.5)
    db.commit()

    ranked = run_task("mentorship.rank", mentee_id=mentee.id)
    mine = [r for r in ranked if r["mentor_id"] in {unscored.id, low.id, negative.id}]

    assert [r["mentor_id"] for r in mine] == [low.id, unscored.id, negative.id]
    assert mine[1]["score"] == 0.0


def test_unknown_mentee_is_not_found(worker):
    with pytest.raises(NotFound, match="Mentee not found"):
        run_task("mentorship.rank", mentee_id=next_id())
