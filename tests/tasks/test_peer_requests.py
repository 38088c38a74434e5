"""`peer.request` and `peer.cancel` through the real worker."""

from __future__ import annotations

import uuid

import pytest

from core.errors import Conflict, Forbidden, MatchingError, NotFound
from tests.factories import make_user, next_id, unique
from tests.factories_peer import make_request, request_row
from tests.support import run_task, send


def test_request_queues_a_pending_request(worker, db):
    user = make_user(db)
    db.commit()
    topic = unique("topic")

    result = run_task("peer.request", user_id=user.id, difficulty="Medium", topic=topic)

    assert result["status"] == "pending"
    assert result["user_id"] == user.id
    assert (result["difficulty"], result["topic"]) == ("Medium", topic)
    stored = request_row(db, uuid.UUID(result["request_id"]))
    assert (stored.status, stored.user_id, stored.topic, stored.match_id) == (
        "pending",
        user.id,
        topic,
        None,
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"difficulty": "Expert", "topic": "arrays"}, "difficulty"),
        ({"difficulty": "easy", "topic": "arrays"}, "difficulty"),
        ({"difficulty": "Easy", "topic": "   "}, "topic"),
        ({"difficulty": "Easy", "topic": "x" * 65}, "topic"),
        ({"difficulty": "Easy", "topic": "arr\tays"}, "topic"),
        ({"difficulty": "Easy", "topic": "<script>"}, "topic"),
        ({"difficulty": "Easy"}, "topic"),
    ],
)
def test_request_refuses_bad_arguments_naming_the_field(worker, db, args, field):
    user = make_user(db)
    db.commit()
    with pytest.raises(MatchingError) as refused:
        run_task("peer.request", user_id=user.id, **args)
    assert str(refused.value).startswith(f"peer.request: {field}:")


def test_request_for_an_unknown_or_inactive_user_is_not_found(worker, db):
    inactive = make_user(db, is_active=False)
    db.commit()
    with pytest.raises(NotFound, match="not found"):
        run_task("peer.request", user_id=next_id(), difficulty="Easy", topic="arrays")
    with pytest.raises(NotFound, match="not active"):
        run_task("peer.request", user_id=inactive.id, difficulty="Easy", topic="arrays")


def test_second_open_request_is_a_duplicate_even_in_another_pool(worker, db):
    user = make_user(db)
    db.commit()
    run_task("peer.request", user_id=user.id, difficulty="Easy", topic=unique("topic"))
    # A redelivered message is refused the same way: the first one already queued the user.
    for topic in (unique("topic"), unique("topic")):
        with pytest.raises(MatchingError) as refused:
            run_task("peer.request", user_id=user.id, difficulty="Hard", topic=topic)
        assert str(refused.value) == "duplicate request"


def test_a_matched_request_also_blocks_a_new_one(worker, db):
    request = make_request(db, topic=unique("topic"), status="matched")
    db.commit()
    with pytest.raises(MatchingError, match="duplicate request"):
        run_task("peer.request", user_id=request.user_id, difficulty="Easy", topic="arrays")


def test_racing_requests_of_one_user_let_exactly_one_in(worker, db):
    user = make_user(db)
    db.commit()
    topic = unique("topic")
    results = [
        send("peer.request", user_id=user.id, difficulty="Easy", topic=topic) for _ in range(6)
    ]
    outcomes = []
    for result in results:
        try:
            outcomes.append(result.get(timeout=60)["status"])
        except MatchingError as exc:
            outcomes.append(str(exc))
    assert sorted(outcomes) == ["duplicate request"] * 5 + ["pending"]


def test_cancel_then_request_again(worker, db):
    user = make_user(db)
    db.commit()
    first = run_task("peer.request", user_id=user.id, difficulty="Easy", topic=unique("topic"))

    cancelled = run_task("peer.cancel", request_id=first["request_id"], user_id=user.id)
    again = run_task("peer.cancel", request_id=first["request_id"], user_id=user.id)

    assert cancelled == again == {"request_id": first["request_id"], "status": "cancelled"}
    assert request_row(db, uuid.UUID(first["request_id"])).status == "cancelled"
    second = run_task("peer.request", user_id=user.id, difficulty="Easy", topic=unique("topic"))
    assert second["status"] == "pending"


def test_cancel_refusals(worker, db):
    topic = unique("topic")
    pending = make_request(db, topic=topic)
    matched = make_request(db, topic=topic, status="matched")
    expired = make_request(db, topic=topic, status="expired")
    stranger = make_user(db)
    db.commit()

    with pytest.raises(Forbidden):
        run_task("peer.cancel", request_id=str(pending.id), user_id=stranger.id)
    with pytest.raises(Conflict, match="already matched"):
        run_task("peer.cancel", request_id=str(matched.id), user_id=matched.user_id)
    with pytest.raises(Conflict, match="expired"):
        run_task("peer.cancel", request_id=str(expired.id), user_id=expired.user_id)
    with pytest.raises(NotFound):
        run_task("peer.cancel", request_id=str(uuid.uuid4()), user_id=stranger.id)
    assert request_row(db, pending.id).status == "pending"
