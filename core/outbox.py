"""Writing events: one outbox row in the caller's transaction, relayed later."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from models.platform import OutboxEvent

EVENT_TYPES = frozenset(
    {
        "match.proposed",
        "match.found",
        "match.cancelled",
        "match.expired",
        "request.expired",
        "session.partner_left",
        "mentorship.matched",
        "mentorship.unmatched",
        "carpool.invitation.removed",
        "carpool.match.removed",
    }
)


def emit_event(session: Session, event_type: str, data: dict[str, Any]) -> None:
    """Record `event_type` with JSON `data`; it commits or rolls back with the caller."""
    emit_events(session, event_type, [data])


def emit_events(session: Session, event_type: str, payloads: list[dict[str, Any]]) -> None:
    """Record many events of one type in a single statement (for set-based sweeps)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; add it to the contract first")
    if payloads:
        session.execute(insert(OutboxEvent), [{"type": event_type, "data": p} for p in payloads])
