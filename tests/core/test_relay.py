"""The relay under a broker outage: nothing is marked published that did not go out."""

from __future__ import annotations

import uuid

import pytest
from kombu.connection import Connection

from bench.harness import bound_to_events, take_events
from core.followups import take_followups
from core.outages import TRANSIENT_ERRORS
from core.outbox import emit_events
from core.relay import relay_pending
from runtime.embedded import free_port
from tests.support import queue_taken_from, unpublished_events
from workers.app import app


def test_an_unreachable_broker_leaves_every_event_to_the_next_relay(worker, db):
    marker = uuid.uuid4().hex
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    # This test's relays are the only ones to run: none is triggered by its commit, and
    # the session worker leaves the events queue to nobody meanwhile.
    with (
        queue_taken_from(worker, "events"),
        app.connection_for_write() as connection,
        bound_to_events(connection, f"test-relay-{marker[:8]}", "match.found") as queue,
    ):
        emit_events(db, "match.found", [{"marker": marker, "n": n} for n in range(30)])
        take_followups(db)
        db.commit()

        with pytest.raises(TRANSIENT_ERRORS):
            relay_pending(lambda: Connection(nowhere, connect_timeout=1))
        assert unpublished_events(db, marker) == 30

        relay_pending(app.connection_for_write)
        received = take_events(connection, queue)
    assert unpublished_events(db, marker) == 0
    # In the order they were written, each once.
    assert [body["data"]["n"] for body in received if body["data"]["marker"] == marker] == list(
        range(30)
    )
