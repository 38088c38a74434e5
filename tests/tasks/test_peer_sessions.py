"""`peer.leave` and the Redis session documents through the real worker, and the
`maintenance.reconcile` repairs of peer matching."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from core.errors import Forbidden, NotFound
from domain.peer.session_store import session_key, session_store
from models import CollabSession, Match
from tests.factories import events_of, make_user, unique
from tests.factories_peer import (
    make_pool,
    make_request,
    request_row,
    stored_document,
    swept_match,
)
from tests.support import run_task


def started_session(db, topic: str) -> tuple[Match, str]:
    match = swept_match(db, topic)
    run_task("peer.confirm", match_id=str(match.id), user_id=match.user_a, confirmed=True)
    found = run_task("peer.confirm", match_id=str(match.id), user_id=match.user_b, confirmed=True)
    return match, found["session_id"]


def document(session_id: str) -> dict[str, Any]:
    stored = stored_document(session_id)
    assert stored is not None
    return stored


def test_leaving_tells_the_partner_and_the_last_one_out_ends_it(worker, db):
    match, session_id = started_session(db, unique("topic"))
    store = session_store()
    # The collaboration service edits the document; leaving must keep its edits.
    edited = {**document(session_id), "code": "print('hi')"}
    store.set(session_key(session_id), json.dumps(edited))

    first = run_task("peer.leave", session_id=session_id, user_id=match.user_a)

    assert first == {
        "session_id": session_id,
        "status": "active",
        "remaining_users": [match.user_b],
    }
    assert document(session_id) == {**edited, "users": [match.user_b]}
    (left,) = events_of(db, "session.partner_left", session_id=session_id)
    assert (left["user_id"], left["remaining_users"], left["ended"]) == (
        match.user_a,
        [match.user_b],
        False,
    )
    assert request_row(db, match.request_a).status == "cancelled"
    assert request_row(db, match.request_b).status == "matched"

    last = run_task("peer.leave", session_id=session_id, user_id=match.user_b)

    assert last == {"session_id": session_id, "status": "ended", "remaining_users": []}
    db.expire_all()
    collab = db.get(CollabSession, uuid.UUID(session_id))
    assert (collab.status, collab.user_ids) == ("ended", [])
    assert stored_document(session_id) is None
    assert len(events_of(db, "session.partner_left", session_id=session_id)) == 2
    # Both may queue again.
    for user_id in (match.user_a, match.user_b):
        again = run_task("peer.request", user_id=user_id, difficulty="Easy", topic=match.topic)
        assert again["status"] == "pending"


def test_leaving_twice_answers_the_same_without_a_second_event(worker, db):
    match, session_id = started_session(db, unique("topic"))
    first = run_task("peer.leave", session_id=session_id, user_id=match.user_b)
    again = run_task("peer.leave", session_id=session_id, user_id=match.user_b)
    assert first == again
    assert len(events_of(db, "session.partner_left", session_id=session_id)) == 1


def test_leave_refusals(worker, db):
    match, session_id = started_session(db, unique("topic"))
    stranger = make_user(db)
    db.commit()
    with pytest.raises(Forbidden):
        run_task("peer.leave", session_id=session_id, user_id=stranger.id)
    with pytest.raises(NotFound):
        run_task("peer.leave", session_id=str(uuid.uuid4()), user_id=match.user_a)


def test_reconcile_rewrites_a_missing_session_document_from_postgres(worker, db):
    _match, session_id = started_session(db, unique("topic"))
    original = document(session_id)
    session_store().delete(session_key(session_id))

    report = run_task("maintenance.reconcile")

    assert report["peer_session_keys_restored"] >= 1
    assert document(session_id) == original
    # A present document is never overwritten.
    session_store().set(session_key(session_id), json.dumps({**original, "code": "x = 1"}))
    run_task("maintenance.reconcile")
    assert document(session_id)["code"] == "x = 1"


def test_reconcile_requeues_requests_whose_match_is_gone(worker, db):
    topic = unique("topic")
    dangling = make_request(db, topic=topic, status="matched")
    dangling.match_id = uuid.uuid4()
    healthy_a, healthy_b = make_pool(db, 2, topic=topic)
    db.commit()
    run_task("peer.sweep", difficulty="Easy", topic=topic)
    # A match cancelled by hand, its requests left behind as matched.
    db.execute(
        text("UPDATE matches SET status = 'cancelled' WHERE request_a = :id"),
        {"id": healthy_a.id},
    )
    still_open = make_request(db, topic=unique("topic"))
    db.commit()

    report = run_task("maintenance.reconcile")

    assert report["peer_requests_requeued"] >= 3
    for request in (dangling, healthy_a, healthy_b):
        stored = request_row(db, request.id)
        assert (stored.status, stored.match_id) == ("pending", None)
    assert request_row(db, still_open.id).status == "pending"
    assert run_task("maintenance.reconcile")["peer_requests_requeued"] == 0
