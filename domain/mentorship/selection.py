"""Starting relationships: a mentee selecting a mentor, requests, and answers to requests."""

from __future__ import annotations

from typing import Literal

from sqlalchemy.orm import Session

from core.errors import Conflict, Forbidden, MatchingError, NotFound
from domain.mentorship.parties import (
    active_relationship_of,
    ensure_room,
    is_blacklisted,
    lock_parties,
    lock_relationship,
    mentor_of,
    pair_relationship,
)
from domain.mentorship.relationships import (
    ALREADY_MATCHED,
    MENTEE_ALREADY_MATCHED,
    RelationshipResult,
    activate,
    relationship_result,
    transaction_time,
)
from models import MentorMentee
from models.mentorship import RelationshipStatus

BLACKLISTED = "You unmatched this mentor before, so they cannot be chosen again"
BLACKLISTED_BY_MENTEE = "This mentee unmatched you before, so the pair cannot be matched again"
NOT_ACCEPTING = "This mentor is not accepting new mentees right now"
PAUSED_PAIR = "Your relationship with this mentor is paused; resume it with mentorship.set_status"


def select_mentor(
    session: Session, mentee_id: int, mentor_id: int, *, default_capacity: int
) -> RelationshipResult:
    """A mentee picks a mentor: the relationship is active at once, if the mentor has room
    (`max_mentees`, else `default_capacity`).

    Running it again for a pair that is already active returns the same result and
    records no second event.
    """
    parties = lock_parties(session, (mentor_id, mentee_id))
    if mentee_id not in parties:
        raise NotFound("Mentee not found")
    current = active_relationship_of(session, mentee_id)
    if current is not None:
        if current.mentor_id == mentor_id:
            return relationship_result(current)
        raise MatchingError(ALREADY_MATCHED)
    mentor = mentor_of(parties, mentor_id, mentee_id)
    existing = pair_relationship(session, mentor_id, mentee_id)
    if existing is not None and existing.status == RelationshipStatus.PAUSED:
        raise Conflict(PAUSED_PAIR)
    if is_blacklisted(session, mentee_id, mentor_id):
        raise Forbidden(BLACKLISTED)
    if not mentor.mentor_available:
        raise Conflict(NOT_ACCEPTING)
    ensure_room(session, mentor, default_capacity)
    # A pending, rejected or completed relationship of the pair (one per pair) is
    # reopened: the mentee's direct choice supersedes the earlier outcome.
    relationship = existing or MentorMentee(mentor_id=mentor_id, mentee_id=mentee_id)
    relationship.initiated_by = "mentee"
    session.add(relationship)
    activate(session, relationship, "select")
    return relationship_result(relationship)


def request_relationship(
    session: Session,
    mentor_id: int,
    mentee_id: int,
    initiated_by: Literal["mentor", "mentee"],
    *,
    default_capacity: int,
) -> RelationshipResult:
    """Either side asks for a relationship; it stays `pending` until the other side answers.
    The mentor needs room (`max_mentees`, else `default_capacity`).

    Repeating a request that is still pending returns it unchanged.
    """
    parties = lock_parties(session, (mentor_id, mentee_id))
    if mentee_id not in parties:
        raise NotFound("Mentee not found")
    mentor = mentor_of(parties, mentor_id, mentee_id)
    existing = pair_relationship(session, mentor_id, mentee_id)
    if existing is not None and existing.status == RelationshipStatus.PENDING:
        return relationship_result(existing)
    if active_relationship_of(session, mentee_id) is not None:
        raise MatchingError(ALREADY_MATCHED if initiated_by == "mentee" else MENTEE_ALREADY_MATCHED)
    if existing is not None and existing.status == RelationshipStatus.PAUSED:
        raise Conflict(PAUSED_PAIR)
    if is_blacklisted(session, mentee_id, mentor_id):
        raise Forbidden(BLACKLISTED if initiated_by == "mentee" else BLACKLISTED_BY_MENTEE)
    # A mentor reaching out decides for themselves; only a mentee's request needs the
    # mentor to be open to new mentees.
    if initiated_by == "mentee" and not mentor.mentor_available:
        raise Conflict(NOT_ACCEPTING)
    ensure_room(session, mentor, default_capacity)
    now = transaction_time(session)
    relationship = existing or MentorMentee(mentor_id=mentor_id, mentee_id=mentee_id)
    relationship.status = RelationshipStatus.PENDING
    relationship.initiated_by = initiated_by
    # A reopened request is a new request: its age, and so its expiry, counts from now.
    relationship.created_at = now
    relationship.updated_at = now
    relationship.accepted_at = None
    relationship.completed_at = None
    session.add(relationship)
    session.flush()
    return relationship_result(relationship)


def respond_to_request(
    session: Session, relationship_id: int, user_id: int, accept: bool, *, default_capacity: int
) -> RelationshipResult:
    """The party who did not initiate a pending request accepts (active) or rejects it;
    accepting needs room (`max_mentees`, else `default_capacity`).

    Repeating the same answer returns the same result.
    """
    locked = lock_relationship(session, relationship_id, user_id)
    relationship = locked.relationship
    # A request the system opened may be answered by either side.
    if locked.caller_role == relationship.initiated_by:
        raise Forbidden("Only the other party can respond to this request")
    wanted = RelationshipStatus.ACTIVE if accept else RelationshipStatus.REJECTED
    if relationship.status != RelationshipStatus.PENDING:
        if relationship.status == wanted:
            return relationship_result(relationship)
        raise Conflict(f"This request is no longer pending: it is {relationship.status}")
    if not accept:
        relationship.status = RelationshipStatus.REJECTED
        relationship.updated_at = transaction_time(session)
        session.flush()
        return relationship_result(relationship)
    mentee_id = relationship.mentee_id
    if active_relationship_of(session, mentee_id) is not None:
        raise MatchingError(
            ALREADY_MATCHED if locked.caller_role == "mentee" else MENTEE_ALREADY_MATCHED
        )
    if is_blacklisted(session, mentee_id, relationship.mentor_id):
        raise Forbidden(BLACKLISTED if locked.caller_role == "mentee" else BLACKLISTED_BY_MENTEE)
    ensure_room(session, locked.mentor, default_capacity)
    activate(session, relationship, "accept")
    return relationship_result(relationship)
