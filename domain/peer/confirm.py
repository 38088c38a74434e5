"""`peer.confirm`: both sides answer a proposed match."""

from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from core.errors import Conflict, Forbidden, NotFound
from core.followups import sweep_due
from core.outbox import emit_event
from core.results import TaskResult
from domain.peer.declines import record_decline
from domain.peer.session_store import SessionStore
from domain.peer.sessions import ensure_document, start_session
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


def confirm_match(
    session: Session, match_id: uuid.UUID, user_id: int, confirmed: bool, store: SessionStore
) -> PeerConfirmResult:
    """Record one side's answer to a proposed match.

    The match row is locked, so two answers racing are taken one after the other.
    A first yes waits for the partner; the second yes starts the session; a no
    cancels the match, requeues the partner at their original place and keeps the
    two apart for the decline cooldown. The same answer again answers the same.
    """
    row = session.execute(
        select(Match, (Match.confirm_deadline <= func.now()).label("overdue"))
        .where(Match.id == match_id)
        .with_for_update(of=Match)
    ).one_or_none()
    if row is None:
        raise NotFound(f"match {match_id} not found")
    match, overdue = row
    if user_id == match.user_a:
        own_answer, partner_id = match.confirmed_a, match.user_b
    elif user_id == match.user_b:
        own_answer, partner_id = match.confirmed_b, match.user_a
    else:
        raise Forbidden(f"user {user_id} is not a party to match {match_id}")

    if match.status == MatchStatus.CONFIRMED:
        if not confirmed:
            raise Conflict(f"match {match_id} is already confirmed; it can no longer be declined")
        collab = session.execute(
            select(CollabSession).where(CollabSession.match_id == match.id)
        ).scalar_one()
        ensure_document(session, collab, store)
        return _found(match, collab.id, collab.question_id, partner_id)
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
    if overdue:
        raise Conflict(
            f"match {match_id} is no longer awaiting confirmation (its deadline has passed)"
        )

    if not confirmed:
        return _decline(session, match, user_id, partner_id)
    if user_id == match.user_a:
        match.confirmed_a = True
    else:
        match.confirmed_b = True
    if not (match.confirmed_a and match.confirmed_b):
        return _waiting(match.id)
    started = start_session(session, match, store)
    return _found(match, started.session_id, started.question_id, partner_id)


def _decline(session: Session, match: Match, user_id: int, partner_id: int) -> PeerCancelledResult:
    match.status = MatchStatus.CANCELLED
    if user_id == match.user_a:
        match.confirmed_a = False
    else:
        match.confirmed_b = False
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
    match: Match, session_id: uuid.UUID, question_id: int | None, partner_id: int
) -> PeerSessionResult:
    return {
        "match_id": match.id,
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
