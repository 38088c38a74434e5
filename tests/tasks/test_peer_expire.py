"""`peer.expire` through the real worker: both timeouts, by the database clock."""

from __future__ import annotations

from sqlalchemy import text

from models import Match
from tests.factories import events_of, unique
from tests.factories_peer import (
    backdate_request,
    make_request,
    pass_deadline,
    request_row,
    swept_match,
)
from tests.support import run_task


def test_pending_requests_past_the_matching_timeout_expire_once(worker, db):
    topic = unique("topic")
    stale = make_request(db, topic=topic)
    fresh = make_request(db, topic=topic, difficulty="Hard")
    db.commit()
    backdate_request(db, stale.id, 61)

    first = run_task("peer.expire")
    second = run_task("peer.expire")

    assert first["requests_expired"] >= 1
    assert second["requests_expired"] == 0
    assert request_row(db, stale.id).status == "expired"
    assert request_row(db, fresh.id).status == "pending"
    (event,) = events_of(db, "request.expired", request_id=stale.id)
    assert (event["user_id"], event["topic"], event["reason"]) == (
        stale.user_id,
        topic,
        "matching_timeout",
    )
    # An expired request no longer blocks a new one.
    again = run_task("peer.request", user_id=stale.user_id, difficulty="Easy", topic=topic)
    assert again["status"] == "pending"


def test_unconfirmed_match_expires_requeueing_the_side_that_said_yes(worker, db):
    match = swept_match(db, unique("topic"))
    created_at = request_row(db, match.request_a).created_at
    run_task("peer.confirm", match_id=str(match.id), user_id=match.user_a, confirmed=True)
    pass_deadline(db, match.id)

    result = run_task("peer.expire")

    assert result["matches_expired"] >= 1
    assert result["requeued"] >= 1
    db.expire_all()
    assert db.get(Match, match.id).status == "expired"
    yes_side = request_row(db, match.request_a)
    assert (yes_side.status, yes_side.match_id, yes_side.created_at) == (
        "pending",
        None,
        created_at,
    )
    silent_side = request_row(db, match.request_b)
    assert (silent_side.status, silent_side.match_id) == ("expired", match.id)
    (event,) = events_of(db, "match.expired", match_id=match.id)
    assert event["reason"] == "confirmation_timeout"
    assert (event["requeued"], event["expired"]) == ([match.user_a], [match.user_b])
    assert run_task("peer.expire")["matches_expired"] == 0
    assert len(events_of(db, "match.expired", match_id=match.id)) == 1


def test_a_requeued_request_gets_a_fresh_matching_timeout(worker, db):
    match = swept_match(db, unique("topic"))
    run_task("peer.confirm", match_id=str(match.id), user_id=match.user_b, confirmed=True)
    # Its request is far older than the matching timeout, but it was just requeued.
    backdate_request(db, match.request_b, 600)
    pass_deadline(db, match.id)
    run_task("peer.expire")
    run_task("peer.expire")
    assert request_row(db, match.request_b).status == "pending"

    db.execute(
        text(
            "UPDATE match_requests SET requeued_at = now() - interval '61 seconds' WHERE id = :id"
        ),
        {"id": match.request_b},
    )
    db.commit()
    run_task("peer.expire")
    assert request_row(db, match.request_b).status == "expired"


def test_a_match_nobody_answered_expires_both_sides(worker, db):
    match = swept_match(db, unique("topic"))
    pass_deadline(db, match.id)

    run_task("peer.expire")

    assert request_row(db, match.request_a).status == "expired"
    assert request_row(db, match.request_b).status == "expired"
    (event,) = events_of(db, "match.expired", match_id=match.id)
    assert (event["requeued"], sorted(event["expired"])) == (
        [],
        sorted([match.user_a, match.user_b]),
    )


def test_a_match_before_its_deadline_is_left_alone(worker, db):
    match = swept_match(db, unique("topic"))
    run_task("peer.expire")
    db.expire_all()
    assert db.get(Match, match.id).status == "pending_confirmation"
    assert request_row(db, match.request_a).status == "matched"
