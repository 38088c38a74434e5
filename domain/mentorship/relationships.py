"""The relationship task result shape, activation, and the `mentorship.matched` event."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.outbox import emit_event
from core.results import TaskResult
from models import MentorMentee
from models.mentorship import RelationshipStatus

# How a relationship became active; consumers can tell a mentee's own choice from
# an accepted request or a system assignment.
MatchSource = Literal["select", "accept", "assign", "backfill"]

ALREADY_MATCHED = "You are already matched with a mentor"
MENTEE_ALREADY_MATCHED = "This mentee is already matched with a mentor"


class RelationshipResult(TaskResult):
    """The result of select, request, respond and set_status."""

    relationship_id: int
    status: str


def relationship_result(relationship: MentorMentee) -> RelationshipResult:
    """`{"relationship_id", "status"}`, the result of select, request, respond and set_status."""
    return {"relationship_id": relationship.id, "status": relationship.status}


def matched_payload(
    relationship_id: int, mentor_id: int, mentee_id: int, initiated_by: str, source: MatchSource
) -> dict[str, Any]:
    """The data of one `mentorship.matched` event."""
    return {
        "relationship_id": relationship_id,
        "mentor_id": mentor_id,
        "mentee_id": mentee_id,
        "initiated_by": initiated_by,
        "source": source,
    }


def transaction_time(session: Session) -> datetime:
    """PostgreSQL's `now()`: the same instant for every timestamp this transaction writes."""
    return session.execute(select(func.now())).scalar_one()


def activate(session: Session, relationship: MentorMentee, source: MatchSource) -> None:
    """Make the relationship active now and record `mentorship.matched` in the same transaction.

    Used for every way a relationship starts (created, accepted, reopened); resuming a
    paused relationship is not a new match and does not come through here.
    """
    now = transaction_time(session)
    relationship.status = RelationshipStatus.ACTIVE
    relationship.accepted_at = now
    relationship.completed_at = None
    relationship.updated_at = now
    session.flush()
    emit_event(
        session,
        "mentorship.matched",
        matched_payload(
            relationship.id,
            relationship.mentor_id,
            relationship.mentee_id,
            relationship.initiated_by,
            source,
        ),
    )
