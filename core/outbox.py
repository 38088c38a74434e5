"""Writing events: outbox rows in the caller's transaction, relayed later."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.followups import relay_due

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

# One statement and one parameter however many events: a parameter set per row costs
# seconds for the tens of thousands of events of a large sweep.
INSERT_EVENTS = text(
    "INSERT INTO outbox (type, data) "
    "SELECT :type, payload FROM jsonb_array_elements(CAST(:payloads AS jsonb)) AS payload"
)


def emit_event(session: Session, event_type: str, data: dict[str, Any]) -> None:
    """Record `event_type` with JSON `data`; it commits or rolls back with the caller."""
    emit_events(session, event_type, [data])


def emit_events(session: Session, event_type: str, payloads: list[dict[str, Any]]) -> None:
    """Record many events of one type in a single statement (for set-based sweeps).

    UUIDs, datetimes and other values pydantic can render become their JSON form.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; add it to the contract first")
    if payloads:
        relay_due(session)
        session.execute(
            INSERT_EVENTS,
            {"type": event_type, "payloads": json.dumps(to_jsonable_python(payloads))},
        )
