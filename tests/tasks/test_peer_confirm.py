"""`peer.confirm` through the real worker: every row of the contract's table."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from core.errors import Conflict, Forbidden, NotFound
from models import CollabSession
from tests.factories import events_of, make_user, unique
from tests.factories_peer import (
    make_question,
    matches_of_topic,
    pass_deadline,
    request_row,
    stored_document,
    swept_match,
)
from tests.support import run_task, send


def confirm(match, user_id: int, confirmed: bool = True):
    return run_task("peer.confirm", match_id=str(match.id), user_id=user_id, confirmed=confirmed)


def test_first_yes_waits_and_repeating_it_answers_the_same(worker, db):
    match = swept_match(db, unique("topic"))

    first = confirm(match, match.user_a)
    again = confirm(match, match.user_a)

    assert first == again == {"status": "waiting_for_partner", "match_id": str(match.id)}
    (stored,) = matches_of_topic(db, match.topic)
    assert (stored.status, stored.confirmed_a, stored.confirmed_b) == (
        "pending_confirmation",
        True,
        None,
    )
    # Past the deadline the same yes still answers the same; a new answer is refused.
    pass_deadline(db, match.id)
    assert confirm(match, match.user_a) == first
    with pytest.raises(Conflict, match="deadline"):
        confirm(match, match.user_b)


def test_both_yes_start_a_session_with_a_fitting_question(worker, db):
    topic = unique("topic")
    question = make_question(db, difficulty="Hard", topics=["graphs", topic])
    make_question(db, difficulty="Easy", topics=[topic])  # wrong difficulty
    match = swept_match(db, topic, difficulty="Hard")

    confirm(match, match.user_b)
    found = confirm(match, match.user_a)

    assert set(found) == {"match_id", "session_id", "question_id", "partner_id"}
    assert found["match_id"] == str(match.id)
    assert found["partner_id"] == match.user_b
    assert found["question_id"] == question.id
    db.expire_all()
    collab = db.get(CollabSession, uuid.UUID(found["session_id"]))
    assert collab is not None
    assert (collab.match_id, collab.question_id, collab.language, collab.status) == (
        match.id,
        question.id,
        "python",
        "active",
    )
    assert collab.user_ids == [match.user_a, match.user_b]
    (stored,) = matches_of_topic(db, topic)
    assert (stored.status, stored.session_id) == ("confirmed", collab.id)
    for request_id in (match.request_a, match.request_b):
        assert request_row(db, request_id).status == "matched"

    (event,) = events_of(db, "match.found", match_id=match.id)
    assert event["session_id"] == found["session_id"]
    assert event["users"] == [match.user_a, match.user_b]
    assert event["question"] == {
        "id": question.id,
        "title": question.title,
        "difficulty": "Hard",
        "topics": ["graphs", topic],
    }
    assert stored_document(found["session_id"]) == {
        "question": event["question"],
        "code": "",
        "language": "python",
        "users": [match.user_a, match.user_b],
    }


def test_repeating_the_second_yes_answers_the_same_and_emits_nothing_new(worker, db):
    match = swept_match(db, unique("topic"))
    confirm(match, match.user_a)
    found = confirm(match, match.user_b)

    assert confirm(match, match.user_b) == found
    # The first yes, repeated after the session started, gets the session too.
    assert confirm(match, match.user_a) == {**found, "partner_id": match.user_b}
    assert len(events_of(db, "match.found", match_id=match.id)) == 1
    assert db.scalar(
        select(CollabSession.id).where(CollabSession.match_id == match.id)
    ) == uuid.UUID(found["session_id"])


def test_without_a_fitting_question_the_session_starts_with_none(worker, db):
    match = swept_match(db, unique("topic"), difficulty="Medium")
    confirm(match, match.user_a)
    found = confirm(match, match.user_b)

    assert found["question_id"] is None
    (event,) = events_of(db, "match.found", match_id=match.id)
    assert event["question"] is None
    assert stored_document(found["session_id"]) == {
        "question": None,
        "code": "",
        "language": "python",
        "users": [match.user_a, match.user_b],
    }


def test_the_starter_bank_has_questions_for_every_difficulty_of_its_topics(worker, db):
    for difficulty in ("Easy", "Medium", "Hard"):
        # Bank topics are lower case; a request's topic matches them in any case.
        match = swept_match(db, "Dynamic-Programming", difficulty=difficulty)
        confirm(match, match.user_a)
        found = confirm(match, match.user_b)
        (event,) = events_of(db, "match.found", match_id=match.id)
        assert found["question_id"] == event["question"]["id"]
        assert event["question"]["difficulty"] == difficulty
        assert "dynamic-programming" in event["question"]["topics"]


def test_a_no_cancels_and_requeues_the_partner(worker, db):
    match = swept_match(db, unique("topic"))
    older = request_row(db, match.request_a)
    created_at = older.created_at

    cancelled = confirm(match, match.user_b, confirmed=False)

    assert cancelled == {"status": "cancelled", "requeued_partner": True, "match_id": str(match.id)}
    (stored,) = matches_of_topic(db, match.topic)
    assert (stored.status, stored.confirmed_b) == ("cancelled", False)
    partner = request_row(db, match.request_a)
    assert (partner.status, partner.match_id, partner.created_at) == ("pending", None, created_at)
    assert request_row(db, match.request_b).status == "cancelled"
    (event,) = events_of(db, "match.cancelled", match_id=match.id)
    assert event["declined_by"] == match.user_b
    assert event["requeued"] == [match.user_a]


def test_a_no_after_a_yes_still_cancels(worker, db):
    match = swept_match(db, unique("topic"))
    confirm(match, match.user_b)
    assert confirm(match, match.user_b, confirmed=False)["status"] == "cancelled"
    assert request_row(db, match.request_a).status == "pending"


def test_repeating_a_no_answers_the_same_and_other_answers_conflict(worker, db):
    match = swept_match(db, unique("topic"))
    first = confirm(match, match.user_a, confirmed=False)

    assert confirm(match, match.user_a, confirmed=False) == first
    assert len(events_of(db, "match.cancelled", match_id=match.id)) == 1
    with pytest.raises(Conflict, match="no longer awaiting confirmation"):
        confirm(match, match.user_a, confirmed=True)
    with pytest.raises(Conflict, match="no longer awaiting confirmation"):
        confirm(match, match.user_b, confirmed=True)
    with pytest.raises(Conflict, match="no longer awaiting confirmation"):
        confirm(match, match.user_b, confirmed=False)


def test_a_no_after_the_session_started_conflicts(worker, db):
    match = swept_match(db, unique("topic"))
    confirm(match, match.user_a)
    confirm(match, match.user_b)
    with pytest.raises(Conflict, match="already confirmed"):
        confirm(match, match.user_a, confirmed=False)


def test_refusals_for_strangers_unknown_and_settled_matches(worker, db):
    match = swept_match(db, unique("topic"))
    stranger = make_user(db)
    db.commit()

    with pytest.raises(Forbidden, match="not a party"):
        confirm(match, stranger.id)
    with pytest.raises(NotFound):
        run_task("peer.confirm", match_id=str(uuid.uuid4()), user_id=stranger.id, confirmed=True)

    pass_deadline(db, match.id)
    with pytest.raises(Conflict, match="deadline"):
        confirm(match, match.user_a)
    run_task("peer.expire")
    with pytest.raises(Conflict, match="it is expired"):
        confirm(match, match.user_a)


def test_two_yes_racing_start_exactly_one_session(worker, db):
    match = swept_match(db, unique("topic"))
    racing = [
        send("peer.confirm", match_id=str(match.id), user_id=user, confirmed=True)
        for user in (match.user_a, match.user_b)
    ]
    answers = [result.get(timeout=60) for result in racing]

    sessions = [a["session_id"] for a in answers if "session_id" in a]
    assert len(sessions) == 1
    assert {"status": "waiting_for_partner", "match_id": str(match.id)} in answers
    assert len(events_of(db, "match.found", match_id=match.id)) == 1
