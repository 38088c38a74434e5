"""Writing events: outbox rows in the caller's transaction, relayed later."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import Text, bindparam, cast, func, insert, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from core.followups import relay_due
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


def checked_event_type(name: str) -> str:
    """`name`, once it is known to be one of the contract's event types.

    Statements that build their events in SQL take their type from here, at import, so
    they pass the same check as `emit_events`. ValueError for an unknown type.
    """
    if name not in EVENT_TYPES:
        raise ValueError(f"unknown event type {name!r}; add it to the contract first")
    return name


# One statement and one parameter however many events: a parameter set per row costs
# seconds for the tens of thousands of events of a large sweep.
_PAYLOADS = func.jsonb_array_elements(cast(bindparam("payloads", type_=Text), JSONB)).table_valued(
    "value"
)
INSERT_EVENTS = insert(OutboxEvent).from_select(
    ["type", "data"], select(bindparam("type", type_=Text), _PAYLOADS.c.value)
)


def emit_event(session: Session, event_type: str, data: dict[str, Any]) -> None:
    """Record `event_type` with JSON `data`; it commits or rolls back with the caller."""
    emit_events(session, event_type, [data])


def emit_events(session: Session, event_type: str, payloads: list[dict[str, Any]]) -> None:
    """Record many events of one type in a single statement (for set-based sweeps).

    UUIDs, datetimes and other values pydantic can render become their JSON form.
    """
    checked = checked_event_type(event_type)
    if payloads:
        relay_due(session)
        session.connection().execute(
            INSERT_EVENTS,
            {"type": checked, "payloads": json.dumps(to_jsonable_python(payloads))},
        )
