"""Test data for peer matching: requests in a pool, swept matches, questions, and reading
rows, events and session documents back."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from domain.peer.budget import free_pairs
from domain.peer.session_store import session_key, session_store
from models import Match, MatchRequest, Question
from tests.factories import make_user
from tests.support import run_task


def make_request(
    session: Session,
    *,
    topic: str,
    difficulty: str = "Easy",
    user_id: int | None = None,
    age_seconds: float = 0,
    status: str = "pending",
) -> MatchRequest:
    """A request (and its user, unless given) created `age_seconds` ago."""
    if user_id is None:
        user_id = make_user(session).id
    request = MatchRequest(
        user_id=user_id,
        difficulty=difficulty,
        topic=topic,
        status=status,
        created_at=datetime.now(UTC) - timedelta(seconds=age_seconds),
    )
    session.add(request)
    session.flush()
    return request


def make_pool(
    session: Session, size: int, *, topic: str, difficulty: str = "Easy"
) -> list[MatchRequest]:
    """`size` pending requests of one pool, oldest first, one second apart."""
    return [
        make_request(session, topic=topic, difficulty=difficulty, age_seconds=size - index)
        for index in range(size)
    ]


def make_question(session: Session, *, difficulty: str, topics: list[str]) -> Question:
    """A question of the bank."""
    title = f"Question {uuid.uuid4().hex[:8]}"
    question = Question(title=title, difficulty=difficulty, topics=topics)
    session.add(question)
    session.flush()
    return question


def matches_of_topic(session: Session, topic: str) -> list[Match]:
    """Every match of a topic, oldest first."""
    session.expire_all()
    return list(
        session.scalars(select(Match).where(Match.topic == topic).order_by(Match.created_at))
    )


def pairs_of_topic(session: Session, topic: str) -> set[frozenset[int]]:
    """The user pairs matched in a topic's pools."""
    return {frozenset((m.user_a, m.user_b)) for m in matches_of_topic(session, topic)}


def request_row(session: Session, request_id: uuid.UUID | str | None) -> MatchRequest:
    """A request as stored now."""
    assert request_id is not None
    session.expire_all()
    request = session.get(MatchRequest, uuid.UUID(str(request_id)))
    assert request is not None
    return request


def swept_match(session: Session, topic: str, difficulty: str = "Easy") -> Match:
    """Two users of a fresh pool, paired by a real sweep of that pool."""
    first, _second = make_pool(session, 2, topic=topic, difficulty=difficulty)
    session.commit()
    run_task("peer.sweep", difficulty=difficulty, topic=topic)
    session.expire_all()
    return session.scalars(select(Match).where(Match.request_a == first.id)).one()


def stored_document(session_id: uuid.UUID | str) -> dict[str, Any] | None:
    """The session's document in Redis, if there is one."""
    raw = session_store().get(session_key(session_id))
    if raw is None:
        return None
    document: dict[str, Any] = json.loads(str(raw))
    return document


def backdate_request(session: Session, request_id: uuid.UUID | None, seconds: int) -> None:
    """Move a request's creation `seconds` into the past, by the database clock."""
    session.execute(
        text(
            "UPDATE match_requests SET created_at = now() - make_interval(secs => :s) "
            "WHERE id = :id"
        ),
        {"s": seconds, "id": request_id},
    )
    session.commit()


def pass_deadline(session: Session, match_id: uuid.UUID) -> None:
    """Put a match's confirmation deadline in the past, by the database clock."""
    session.execute(
        text("UPDATE matches SET confirm_deadline = now() - interval '1 second' WHERE id = :id"),
        {"id": match_id},
    )
    session.commit()


def cap_with_room(session: Session, pairs: int, stale_after: int) -> int:
    """A MAX_CONCURRENT_MATCHES with room for exactly `pairs` more pairs: what open matches
    and reservations younger than `stale_after` seconds hold now, plus that."""
    unbounded = 10**9
    return unbounded - free_pairs(session, unbounded, stale_after) + pairs
