"""`peer.confirm`: both sides answer a proposed match."""

from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.orm import Session

from core.errors import Conflict, Forbidden, NotFound
from core.followups import sweep_due
from core.outbox import emit_event
from core.results import TaskResult
from domain.peer.declines import record_decline
from domain.peer.session_store import SessionStore
from domain.peer.sessions import Parties, ensure_document, start_session
from models.peer import CollabSession, Match, MatchRequest, MatchStatus, RequestStatus


class PeerWaitingResult(TaskResult):
    """A first yes: the partner has not confirmed yet."""

    status: Literal["waiting_for_partner"]
    match_id: uuid.UUID


class PeerSessionResult(TaskResult):
    """Both said yes: the session created for them."""

    match_id: uuid.UUID
    session_id: uuid.UUID
    question_id: int | None
    partner_id: int


class PeerCancelledResult(TaskResult):
    """A no: the match is cancelled and the partner's request requeued."""

    status: Literal[MatchStatus.CANCELLED]
    requeued_partner: bool
    match_id: uuid.UUID


PeerConfirmResult = PeerWaitingResult | PeerSessionResult | PeerCancelledResult

# Built once, like every statement on the way of a request, and in Core: building a
# statement per call, and loading and flushing the match as an ORM object, cost more
# than the database's work on them.
MATCH_TO_ANSWER = (
    select(
        Match.id,
        Match.user_a,
        Match.user_b,
        Match.difficulty,
        Match.topic,
        Match.status,
        Match.confirmed_a,
        Match.confirmed_b,
        (Match.confirm_deadline <= func.now()).label("overdue"),
    )
    .where(Match.id == bindparam("match_id"))
    .with_for_update()
)
# The answering side's confirmation, and, when the answer settles the match, its new
# status and session (NULL keeps what stands).
RECORD_ANSWER = (
    update(Match)
    .where(Match.id == bindparam("match_id"))
    .values(
        confirmed_a=case(
            (Match.user_a == bindparam("answering"), bindparam("answer")),
            else_=Match.confirmed_a,
        ),
        confirmed_b=case(
            (Match.user_b == bindparam("answering"), bindparam("answer")),
            else_=Match.confirmed_b,
        ),
        status=func.coalesce(bindparam("settled", type_=Match.status.type), Match.status),
        session_id=func.coalesce(
            bindparam("started_session", type_=Match.session_id.type), Match.session_id
        ),
    )
)
SESSION_OF_MATCH = select(CollabSession).where(CollabSession.match_id == bindparam("match_id"))


def confirm_match(
    session: Session, match_id: uuid.UUID, user_id: int, confirmed: bool, store: SessionStore
) -> PeerConfirmResult:
    """Record one side's answer to a proposed match.

    The match row is locked, so two answers racing are taken one after the other.
    A first yes waits for the partner; the second yes starts the session; a no
    cancels the match, requeues the partner at their original place and keeps the
    two apart for the decline cooldown. The same answer again answers the same.
    """
    match = session.connection().execute(MATCH_TO_ANSWER, {"match_id": match_id}).one_or_none()
    if match is None:
        raise NotFound(f"match {match_id} not found")
    if user_id == match.user_a:
        own_answer, partner_answer, partner_id = match.confirmed_a, match.confirmed_b, match.user_b
    elif user_id == match.user_b:
        own_answer, partner_answer, partner_id = match.confirmed_b, match.confirmed_a, match.user_a
    else:
        raise Forbidden(f"user {user_id} is not a party to match {match_id}")

    if match.status == MatchStatus.CONFIRMED:
        if not confirmed:
            raise Conflict(f"match {match_id} is already confirmed; it can no longer be declined")
        collab = session.execute(SESSION_OF_MATCH, {"match_id": match.id}).scalar_one()
        ensure_document(session, collab, store)
        return _found(match.id, collab.id, collab.question_id, partner_id)
    if match.status == MatchStatus.CANCELLED and own_answer is False and not confirmed:
        # The partner was requeued by this user's first no.
        return _cancelled(match.id, requeued_partner=True)
    if match.status != MatchStatus.PENDING_CONFIRMATION:
        raise Conflict(
            f"match {match_id} is no longer awaiting confirmation (it is {match.status})"
        )
    if confirmed and own_answer is True:
        # Still waiting: had the partner said yes too, the match would be confirmed.
        return _waiting(match.id)
    if match.overdue:
        raise Conflict(
            f"match {match_id} is no longer awaiting confirmation (its deadline has passed)"
        )

    parties = Parties(match.id, match.user_a, match.user_b, match.difficulty, match.topic)
    if not confirmed:
        return _decline(session, parties, user_id, partner_id)
    if partner_answer is not True:
        _record_answer(session, match.id, user_id, True)
        return _waiting(match.id)
    started = start_session(session, parties, store)
    _record_answer(session, match.id, user_id, True, MatchStatus.CONFIRMED, started.session_id)
    return _found(match.id, started.session_id, started.question_id, partner_id)


def _record_answer(
    session: Session,
    match_id: uuid.UUID,
    user_id: int,
    answer: bool,
    settled: MatchStatus | None = None,
    started_session: uuid.UUID | None = None,
) -> None:
    session.connection().execute(
        RECORD_ANSWER,
        {
            "match_id": match_id,
            "answering": user_id,
            "answer": answer,
            "settled": settled,
            "started_session": started_session,
        },
    )


def _decline(
    session: Session, match: Parties, user_id: int, partner_id: int
) -> PeerCancelledResult:
    _record_answer(session, match.id, user_id, False, MatchStatus.CANCELLED)
    # This side's request is closed; the partner's goes back to pending with its
    # original created_at (its place in the pool) and a fresh matching timeout.
    is_decliner = MatchRequest.user_id == user_id
    moved = session.execute(
        update(MatchRequest)
        .where(
            MatchRequest.user_id.in_([user_id, partner_id]),
            MatchRequest.match_id == match.id,
            MatchRequest.status == RequestStatus.MATCHED,
        )
        .values(
            status=case((is_decliner, RequestStatus.CANCELLED), else_=RequestStatus.PENDING),
            match_id=case((is_decliner, MatchRequest.match_id), else_=None),
            requeued_at=case((is_decliner, MatchRequest.requeued_at), else_=func.now()),
        )
        .returning(MatchRequest.user_id, MatchRequest.status)
    ).all()
    requeued = [row.user_id for row in moved if row.status == RequestStatus.PENDING]
    if requeued:
        sweep_due(session, match.topic)
    record_decline(session, declined_by=user_id, other=partner_id)
    emit_event(
        session,
        "match.cancelled",
        {
            "match_id": match.id,
            "users": [match.user_a, match.user_b],
            "declined_by": user_id,
            "requeued": requeued,
        },
    )
    return _cancelled(match.id, requeued_partner=bool(requeued))


def _waiting(match_id: uuid.UUID) -> PeerWaitingResult:
    return {"status": "waiting_for_partner", "match_id": match_id}


def _found(
    match_id: uuid.UUID, session_id: uuid.UUID, question_id: int | None, partner_id: int
) -> PeerSessionResult:
    return {
        "match_id": match_id,
        "session_id": session_id,
        "question_id": question_id,
        "partner_id": partner_id,
    }


def _cancelled(match_id: uuid.UUID, *, requeued_partner: bool) -> PeerCancelledResult:
    return {
        "status": MatchStatus.CANCELLED,
        "requeued_partner": requeued_partner,
        "match_id": match_id,
    }
