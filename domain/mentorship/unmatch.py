"""Unmatching: the whole cascade of ending a relationship from either side."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.audit import record_audit
from core.db import rowcount
from core.errors import MatchingError, NotFound
from core.outbox import emit_event
from domain.mentorship.parties import lock_parties
from domain.mentorship.relationships import (
    RelationshipResult,
    transaction_time,
)
from models import MentorBlacklist, MentorMentee, Message
from models.mentorship import RelationshipStatus


class UnmatchResult(RelationshipResult):
    """The result of `mentorship.unmatch`: the completed relationship and its two sides."""

    mentor_id: int
    mentee_id: int


def unmatch(session: Session, user_id: int, other_id: int) -> UnmatchResult:
    """End the relationship between two users, whoever asks, in one transaction.

    The relationship becomes `completed`, the mentor is blacklisted for the mentee,
    every message between the two is deleted, `mentorship.unmatched` is recorded and an
    audit row counts what went.
    The conditional UPDATE decides: a second run finds nothing active or paused to end,
    returns the first run's result and changes nothing more.
    """
    parties = lock_parties(session, (user_id, other_id))
    for wanted in (user_id, other_id):
        if wanted not in parties:
            raise NotFound(f"User {wanted} not found")
    between = or_(
        and_(MentorMentee.mentor_id == user_id, MentorMentee.mentee_id == other_id),
        and_(MentorMentee.mentor_id == other_id, MentorMentee.mentee_id == user_id),
    )
    now = transaction_time(session)
    ended = session.execute(
        update(MentorMentee)
        .where(
            between, MentorMentee.status.in_((RelationshipStatus.ACTIVE, RelationshipStatus.PAUSED))
        )
        .values(status=RelationshipStatus.COMPLETED, completed_at=now, updated_at=now)
        .returning(MentorMentee.id, MentorMentee.mentor_id, MentorMentee.mentee_id)
    ).first()
    if ended is None:
        return _already_unmatched(session, between)
    blacklisted = session.execute(
        insert(MentorBlacklist)
        .values(mentee_id=ended.mentee_id, mentor_id=ended.mentor_id)
        .on_conflict_do_nothing()
        .returning(MentorBlacklist.mentor_id)
    ).all()
    deleted = session.execute(
        delete(Message).where(
            or_(
                and_(Message.sender_id == user_id, Message.receiver_id == other_id),
                and_(Message.sender_id == other_id, Message.receiver_id == user_id),
            )
        )
    )
    messages_deleted = rowcount(deleted)
    subject = {
        "relationship_id": ended.id,
        "mentor_id": ended.mentor_id,
        "mentee_id": ended.mentee_id,
        "unmatched_by": user_id,
    }
    emit_event(session, "mentorship.unmatched", {**subject, "messages_deleted": messages_deleted})
    record_audit(
        session,
        "mentorship.unmatch",
        subject,
        {
            "relationships_completed": 1,
            "mentors_blacklisted": len(blacklisted),
            "messages_deleted": messages_deleted,
        },
    )
    return _result(ended.id, ended.mentor_id, ended.mentee_id)


def _already_unmatched(session: Session, between: Any) -> UnmatchResult:
    """The first run's result when the pair was unmatched before; MatchingError otherwise."""
    previous = session.execute(
        select(MentorMentee.id, MentorMentee.mentor_id, MentorMentee.mentee_id).where(
            between,
            MentorMentee.status == RelationshipStatus.COMPLETED,
            exists().where(
                MentorBlacklist.mentee_id == MentorMentee.mentee_id,
                MentorBlacklist.mentor_id == MentorMentee.mentor_id,
            ),
        )
    ).first()
    if previous is None:
        raise MatchingError("You are not matched with this user")
    return _result(previous.id, previous.mentor_id, previous.mentee_id)


def _result(relationship_id: int, mentor_id: int, mentee_id: int) -> UnmatchResult:
    return {
        "relationship_id": relationship_id,
        "status": RelationshipStatus.COMPLETED,
        "mentor_id": mentor_id,
        "mentee_id": mentee_id,
    }
