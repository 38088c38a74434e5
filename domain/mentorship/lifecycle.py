"""How a relationship moves after it starts (pause, resume, complete), and request expiry."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from core.audit import record_audit
from core.errors import Conflict
from core.results import TaskResult
from domain.mentorship.parties import active_relationship_of, ensure_room, lock_relationship
from domain.mentorship.relationships import (
    RelationshipResult,
    relationship_result,
    transaction_time,
)
from models import MentorMentee
from models.mentorship import RelationshipStatus

# The statuses a party may ask for: the task's published argument schema, so a Literal
# (its JSON schema is a plain string enum); every one is a `RelationshipStatus`.
SettableStatus = Literal["paused", "active", "completed"]

LEGAL_MOVES = frozenset(
    {
        (RelationshipStatus.ACTIVE, RelationshipStatus.PAUSED),
        (RelationshipStatus.PAUSED, RelationshipStatus.ACTIVE),
        (RelationshipStatus.ACTIVE, RelationshipStatus.COMPLETED),
        (RelationshipStatus.PAUSED, RelationshipStatus.COMPLETED),
    }
)


def set_status(
    session: Session,
    relationship_id: int,
    user_id: int,
    status: SettableStatus,
    *,
    default_capacity: int,
) -> RelationshipResult:
    """Either party pauses, resumes or completes a relationship; only the legal moves.
    Resuming needs room (`max_mentees`, else `default_capacity`).

    Asking for the status the relationship already has changes nothing and returns the
    same result, so a repeated call is harmless.
    """
    wanted = RelationshipStatus(status)
    locked = lock_relationship(session, relationship_id, user_id)
    relationship = locked.relationship
    if relationship.status == wanted:
        return relationship_result(relationship)
    if (relationship.status, wanted) not in LEGAL_MOVES:
        raise Conflict(
            f"A {relationship.status} relationship cannot become {wanted}; "
            "allowed: active to paused, paused to active, active or paused to completed"
        )
    now = transaction_time(session)
    if wanted == RelationshipStatus.ACTIVE:
        # Resuming takes a place again: it needs room and no other active mentor.
        current = active_relationship_of(session, relationship.mentee_id)
        if current is not None:
            raise Conflict("The mentee already has another active mentor")
        ensure_room(session, locked.mentor, default_capacity)
    if wanted == RelationshipStatus.COMPLETED:
        relationship.completed_at = now
    relationship.status = wanted
    relationship.updated_at = now
    session.flush()
    return relationship_result(relationship)


class ExpireResult(TaskResult):
    """The result of `mentorship.expire`."""

    expired: int


def expire_requests(session: Session, timeout_seconds: int) -> ExpireResult:
    """Reject pending requests older than `timeout_seconds` (one statement), audited with
    the ids of the relationships rejected."""
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, timeout_seconds)
    expired = list(
        session.scalars(
            update(MentorMentee)
            .where(
                MentorMentee.status == RelationshipStatus.PENDING, MentorMentee.created_at < cutoff
            )
            .values(status=RelationshipStatus.REJECTED, updated_at=func.now())
            .returning(MentorMentee.id)
        )
    )
    counts: ExpireResult = {"expired": len(expired)}
    record_audit(session, "mentorship.expire", {"relationship_ids": expired}, counts)
    return counts
