"""Test data factories. Ids come from one counter far above anything a sequence hands
out, so tests never collide with each other's rows."""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import OutboxEvent, User

# Distinct per test process, so concurrent runs against one database stay apart.
_ids = itertools.count(10_000_000_000 + (os.getpid() % 10_000) * 100_000_000)


def next_id() -> int:
    """A fresh bigint id no other test uses."""
    return next(_ids)


def unique(prefix: str) -> str:
    """A fresh label (topic, group name, ...) for isolating a test's data."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_user(session: Session, **fields: Any) -> User:
    """A user row with sensible defaults; `fields` override any column."""
    user_id = fields.pop("id", None) or next_id()
    values: dict[str, Any] = {
        "id": user_id,
        "email": f"user{user_id}@example.test",
        "display_name": f"User {user_id}",
        "role": "member",
    }
    values.update(fields)
    user = User(**values)
    session.add(user)
    session.flush()
    return user


def events_of(session: Session, event_type: str, **data: Any) -> list[dict[str, Any]]:
    """Payloads of outbox events of a type whose data has every top-level `key=value`."""
    session.expire_all()
    query = select(OutboxEvent.data).where(OutboxEvent.type == event_type)
    for key, value in data.items():
        query = query.where(OutboxEvent.data[key].astext == str(value))
    return list(session.scalars(query.order_by(OutboxEvent.id)))
