"""`carpool.rebuild_stats` through the real worker, checked against a plain recount."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select

from core.errors import MatchingError
from models import Invitation, ReservationStats
from tests.factories import make_user, next_id
from tests.factories_carpool import (
    invite,
    make_reservation,
    match,
    recounted_stats,
    stored_stats,
)
from tests.support import run_task


def _seed(db):
    alice, bob = make_user(db), make_user(db)
    r1, r2, r3, r4 = (make_reservation(db, u) for u in (alice, bob, bob, alice))
    invite(db, r1, r2)
    invite(db, r1, r3)
    invite(db, r2, r1)
    invite(db, r4, r1)
    match(db, r1, r2)
    match(db, r3, r1)
    match(db, r4, r4)  # names r4 on both sides: one match for r4
    return r1, r2, r3, r4


def test_given_reservations_get_sent_received_and_matches_on_either_side(worker, db):
    r1, r2, r3, r4 = _seed(db)
    db.commit()
    ids = [r1.id, r2.id, r3.id, r4.id]

    result = run_task("carpool.rebuild_stats", reservation_ids=ids)

    assert result == {"reservations_written": 4}
    assert stored_stats(db, ids) == {
        r1.id: (2, 2, 2),
        r2.id: (1, 1, 1),
        r3.id: (0, 1, 1),
        r4.id: (1, 0, 1),
    }
    assert stored_stats(db, ids) == recounted_stats(db, ids)
    again = run_task("carpool.rebuild_stats", reservation_ids=ids)
    assert again == {"reservations_written": 0}  # counts already right: nothing rewritten


def test_a_full_rebuild_rewrites_only_changed_counts_with_modified_on(worker, db):
    r1, r2, r3, r4 = _seed(db)
    db.commit()
    ids = [r1.id, r2.id, r3.id, r4.id]
    run_task("carpool.rebuild_stats", reservation_ids=ids)
    before = dict(
        db.execute(
            select(ReservationStats.reservation_id, ReservationStats.modified_on).where(
                ReservationStats.reservation_id.in_(ids)
            )
        ).all()
    )
    db.commit()
    db.execute(
        delete(Invitation).where(Invitation.reservation_id == r1.id, Invitation.offer_id == r3.id)
    )
    invite(db, r3, r4)
    db.commit()

    result = run_task("carpool.rebuild_stats")

    assert result["reservations_written"] >= 3  # r1, r3 and r4 changed
    assert stored_stats(db, ids) == recounted_stats(db, ids)
    assert stored_stats(db, [r1.id]) == {r1.id: (1, 2, 2)}
    after = dict(
        db.execute(
            select(ReservationStats.reservation_id, ReservationStats.modified_on).where(
                ReservationStats.reservation_id.in_(ids)
            )
        ).all()
    )
    assert after[r1.id] > before[r1.id]
    assert after[r2.id] == before[r2.id]  # r2's counts did not change


def test_unknown_ids_are_ignored(worker):
    answer = run_task("carpool.rebuild_stats", reservation_ids=[next_id()])
    assert answer == {"reservations_written": 0}


def test_an_empty_id_list_is_refused_naming_the_field(worker):
    with pytest.raises(MatchingError, match="reservation_ids"):
        run_task("carpool.rebuild_stats", reservation_ids=[])
