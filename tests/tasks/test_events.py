"""The outbox relay, against a real queue bound to `matching.events`."""

from __future__ import annotations

import uuid
from collections import Counter

from bench.harness import bound_to_events, take_events
from core.outbox import emit_events
from tests.support import run_task, send, unpublished_events
from workers.app import app


def test_two_relays_publish_each_event_exactly_once(worker, db):
    marker = uuid.uuid4().hex
    with (
        app.connection_for_write() as connection,
        bound_to_events(connection, f"test-events-{marker[:8]}") as queue,
    ):
        emit_events(db, "match.proposed", [{"marker": marker, "n": n} for n in range(1200)])
        db.commit()

        # Two relays at once on the two worker processes, then one more to finish.
        first, second = send("events.publish"), send("events.publish")
        first.get(timeout=60)
        second.get(timeout=60)
        run_task("events.publish")

        mine = [b for b in take_events(connection, queue) if b["data"].get("marker") == marker]
    counts = Counter(body["event_id"] for body in mine)
    assert len(counts) == 1200
    assert set(counts.values()) == {1}
    sample = mine[0]
    assert sample["type"] == "match.proposed"
    assert set(sample) == {"event_id", "type", "occurred_at", "data"}
    assert unpublished_events(db, marker) == 0


def test_routing_key_is_the_event_type(worker, db):
    marker = uuid.uuid4().hex
    with (
        app.connection_for_write() as connection,
        bound_to_events(connection, f"test-events-{marker[:8]}", "request.expired") as expired_only,
    ):
        emit_events(db, "request.expired", [{"marker": marker}])
        emit_events(db, "match.found", [{"marker": marker}])
        db.commit()
        run_task("events.publish")
        types = [
            b["type"]
            for b in take_events(connection, expired_only)
            if b["data"].get("marker") == marker
        ]
    assert types == ["request.expired"]
