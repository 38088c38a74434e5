"""`peer.request` and `peer.cancel`: a user's place in a pool."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy import Text, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import Conflict, Forbidden, MatchingError, NotFound
from core.followups import sweep_due
from core.results import TaskResult
from domain.peer.rules import Difficulty
from models.peer import MatchRequest, RequestStatus
from models.users import User

# The partial unique index that allows one pending or matched request per user.
OPEN_REQUEST_INDEX = "uq_match_requests_open_user"


# Built once: every `peer.request` runs it, and a statement built per call cost more
# than the database's work on it. Inserting from the user's row checks that the user
# exists and is active in the same round trip as the insert.
OPEN_REQUEST = (
    insert(MatchRequest)
    .from_select(
        ["user_id", "difficulty", "topic"],
        select(
            User.id, bindparam("pool_difficulty", type_=Text), bindparam("pool_topic", type_=Text)
        ).where(User.id == bindparam("requester"), User.is_active),
    )
    .returning(MatchRequest.id, MatchRequest.status, MatchRequest.created_at)
)


class PeerRequestResult(TaskResult):
    """The request just queued."""

    request_id: uuid.UUID
    status: Literal[RequestStatus.PENDING]
    user_id: int
    difficulty: Difficulty
    topic: str
    created_at: datetime


class PeerCancelResult(TaskResult):
    """The request withdrawn."""

    request_id: uuid.UUID
    status: Literal[RequestStatus.CANCELLED]


def create_request(
    session: Session, user_id: int, difficulty: Difficulty, topic: str
) -> PeerRequestResult:
    """Put an active user in the pool (difficulty, topic).

    One open (pending or matched) request per user is enforced by the database's
    partial unique index, so two requests racing cannot both get in.
    """
    try:
        row = (
            session.connection()
            .execute(
                OPEN_REQUEST,
                {"requester": user_id, "pool_difficulty": difficulty, "pool_topic": topic},
            )
            .one_or_none()
        )
    except IntegrityError as exc:
        if _violated_constraint(exc) == OPEN_REQUEST_INDEX:
            raise MatchingError("duplicate request") from None
        raise
    if row is None:
        if session.scalar(select(User.id).where(User.id == user_id)) is None:
            raise NotFound(f"user {user_id} not found")
        raise NotFound(f"user {user_id} is not active")
    sweep_due(session, topic)
    return {
        "request_id": row.id,
        "status": row.status,
        "user_id": user_id,
        "difficulty": difficulty,
        "topic": topic,
        "created_at": row.created_at,
    }


def cancel_request(session: Session, request_id: uuid.UUID, user_id: int) -> PeerCancelResult:
    """Withdraw a pending request; cancelling it again answers the same."""
    request = session.execute(
        select(MatchRequest.user_id, MatchRequest.status)
        .where(MatchRequest.id == request_id)
        .with_for_update()
    ).one_or_none()
    if request is None:
        raise NotFound(f"request {request_id} not found")
    if request.user_id != user_id:
        raise Forbidden(f"request {request_id} belongs to another user")
    if request.status == RequestStatus.MATCHED:
        raise Conflict(f"request {request_id} is already matched; answer the match instead")
    if request.status == RequestStatus.EXPIRED:
        raise Conflict(f"request {request_id} has expired")
    if request.status == RequestStatus.PENDING:
        session.execute(
            update(MatchRequest)
            .where(MatchRequest.id == request_id, MatchRequest.status == RequestStatus.PENDING)
            .values(status=RequestStatus.CANCELLED)
        )
    return {"request_id": request_id, "status": RequestStatus.CANCELLED}


def _violated_constraint(exc: IntegrityError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)
