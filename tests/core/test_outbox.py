"""Outbox writes: one statement, JSON rendering, and the caller's transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bench.harness import count_statements
from core.outbox import EVENT_TYPES, checked_event_type, emit_event, emit_events
from domain.peer.expiry import MATCH_EXPIRED, REQUEST_EXPIRED
from domain.peer.sweep import WRITE_MATCHES
from models import OutboxEvent


def _rows(db, marker: str) -> list[OutboxEvent]:
    db.expire_all()
    return list(
        db.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.data["marker"].astext == marker)
            .order_by(OutboxEvent.id)
        )
    )


def test_many_events_are_one_statement_and_keep_their_order(db):
    marker = uuid.uuid4().hex
    with count_statements() as statements:
        emit_events(db, "match.proposed", [{"marker": marker, "n": n} for n in range(500)])
    db.commit()
    assert statements.value == 1
    rows = _rows(db, marker)
    assert [row.data["n"] for row in rows] == list(range(500))
    assert {row.type for row in rows} == {"match.proposed"}
    assert len({row.event_id for row in rows}) == 500


def test_uuids_and_datetimes_are_stored_as_json_text(db):
    marker = uuid.uuid4().hex
    match_id = uuid.uuid4()
    deadline = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    emit_event(db, "match.found", {"marker": marker, "match_id": match_id, "at": deadline})
    db.commit()
    (row,) = _rows(db, marker)
    assert row.data["match_id"] == str(match_id)
    assert row.data["at"].startswith("2026-01-02T03:04:05")


def test_events_roll_back_with_the_change_they_report(db):
    marker = uuid.uuid4().hex
    emit_event(db, "request.expired", {"marker": marker})
    db.rollback()
    assert _rows(db, marker) == []


def test_unknown_event_type_is_refused(db):
    with pytest.raises(ValueError, match="unknown event type"):
        emit_event(db, "match.teleported", {})


def test_events_built_in_sql_take_their_type_through_the_same_check():
    assert WRITE_MATCHES.compile().params["proposed_type"] == "match.proposed"
    assert {REQUEST_EXPIRED, MATCH_EXPIRED} == {"request.expired", "match.expired"}
    assert checked_event_type("match.proposed") in EVENT_TYPES
    with pytest.raises(ValueError, match="unknown event type"):
        checked_event_type("match.teleported")
