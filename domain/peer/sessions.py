"""Collaboration sessions: starting one for a confirmed match, leaving one."""

from __future__ import annotations

import uuid
from typing import Any, Literal, NamedTuple

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from core.errors import Forbidden, NotFound
from core.followups import after_commit
from core.outbox import emit_event
from core.results import TaskResult
from domain.peer import session_store
from domain.peer.rules import SESSION_LANGUAGE
from domain.peer.session_store import SessionStore
from models.peer import (
    CollabSession,
    Match,
    MatchRequest,
    Question,
    RequestStatus,
    SessionStatus,
)


class StartedSession(NamedTuple):
    """What a confirm needs to answer once the session exists."""

    session_id: uuid.UUID
    question_id: int | None


class PeerLeaveResult(TaskResult):
    """The session after the user left it."""

    session_id: uuid.UUID
    status: Literal[SessionStatus.ACTIVE, SessionStatus.ENDED]
    remaining_users: list[int]


def question_json(question: Question | None) -> dict[str, Any] | None:
    """How a question appears in events and session documents."""
    if question is None:
        return None
    return {
        "id": question.id,
        "title": question.title,
        "difficulty": question.difficulty,
        "topics": list(question.topics),
    }


# Built once: every session a confirmation starts runs them.
_USES = (
    select(func.count())
    .select_from(CollabSession)
    .where(CollabSession.question_id == Question.id)
    .scalar_subquery()
)
LEAST_USED_QUESTION = (
    select(Question)
    .where(
        Question.difficulty == bindparam("difficulty"),
        Question.topics.contains(bindparam("topics", type_=Question.topics.type)),
    )
    .order_by(_USES, func.random())
    .limit(1)
)
OPEN_SESSION = insert(CollabSession)


def choose_question(session: Session, difficulty: str, topic: str) -> Question | None:
    """A question of the difficulty listing the topic: the least used, ties broken at random.

    Topics are matched case-insensitively (the bank stores them in lower case).
    """
    return session.scalars(
        LEAST_USED_QUESTION, {"difficulty": difficulty, "topics": [topic.lower()]}
    ).first()


class Parties(NamedTuple):
    """What starting a session needs of its match."""

    id: uuid.UUID
    user_a: int
    user_b: int
    difficulty: str
    topic: str


def start_session(session: Session, match: Parties, store: SessionStore) -> StartedSession:
    """Create the session of a match both sides confirmed; emit `match.found`. The caller
    marks the match confirmed with the session's id.

    The Redis document is written once the transaction has committed.
    """
    question = choose_question(session, match.difficulty, match.topic)
    users = [match.user_a, match.user_b]
    session_id = uuid.uuid4()
    session.connection().execute(
        OPEN_SESSION,
        {
            "id": session_id,
            "match_id": match.id,
            "question_id": question.id if question else None,
            "language": SESSION_LANGUAGE,
            "user_ids": users,
        },
    )
    emit_event(
        session,
        "match.found",
        {
            "session_id": session_id,
            "match_id": match.id,
            "users": users,
            "question": question_json(question),
            "language": SESSION_LANGUAGE,
            "difficulty": match.difficulty,
            "topic": match.topic,
        },
    )
    document = session_store.session_document(question_json(question), users)
    after_commit(session, lambda: session_store.write_if_missing(store, session_id, document))
    return StartedSession(session_id, question.id if question else None)


def ensure_document(session: Session, collab: CollabSession, store: SessionStore) -> None:
    """After commit, write the session's document if it is missing (a retried confirm)."""
    if collab.status != SessionStatus.ACTIVE:
        return
    question = session.get(Question, collab.question_id) if collab.question_id else None
    document = session_store.session_document(question_json(question), list(collab.user_ids))
    after_commit(session, lambda: session_store.write_if_missing(store, collab.id, document))


def leave_session(
    session: Session, session_id: uuid.UUID, user_id: int, store: SessionStore
) -> PeerLeaveResult:
    """Take a user out of a session; the last one out ends it.

    Leaving also closes the user's request (status `cancelled`), so they may queue
    again. Leaving twice answers the same and emits nothing the second time.
    """
    collab = session.execute(
        select(CollabSession).where(CollabSession.id == session_id).with_for_update()
    ).scalar_one_or_none()
    if collab is None:
        raise NotFound(f"session {session_id} not found")
    # collab_sessions.match_id is a foreign key: the match is there.
    match = session.execute(select(Match).where(Match.id == collab.match_id)).scalar_one()
    if user_id not in (match.user_a, match.user_b):
        raise Forbidden(f"user {user_id} is not in session {session_id}")
    remaining = [member for member in collab.user_ids if member != user_id]
    if len(remaining) == len(collab.user_ids):
        return _left(collab)
    collab.user_ids = remaining
    if not remaining:
        collab.status = SessionStatus.ENDED
    session.execute(
        update(MatchRequest)
        .where(
            MatchRequest.user_id == user_id,
            MatchRequest.match_id == match.id,
            MatchRequest.status == RequestStatus.MATCHED,
        )
        .values(status=RequestStatus.CANCELLED)
    )
    emit_event(
        session,
        "session.partner_left",
        {
            "session_id": session_id,
            "match_id": match.id,
            "user_id": user_id,
            "remaining_users": remaining,
            "ended": not remaining,
        },
    )
    if remaining:
        after_commit(session, lambda: session_store.replace_users(store, session_id, remaining))
    else:
        after_commit(session, lambda: session_store.delete(store, session_id))
    return _left(collab)


def _left(collab: CollabSession) -> PeerLeaveResult:
    return {
        "session_id": collab.id,
        "status": collab.status,
        "remaining_users": list(collab.user_ids),
    }
