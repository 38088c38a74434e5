"""The outbox relay task."""

from __future__ import annotations

from core.db import session_factory
from core.followups import RELAY
from core.relay import RELAY_BATCH, PublishResult, relay_batch
from workers.app import app
from workers.base import NoArgs, ProgressReporter, own_transactions_task
from workers.triggers import mark_started

# One run relays at most this many batches, then leaves the rest to the next tick,
# so a large backlog never holds a worker past its time limit.
MAX_BATCHES_PER_RUN = 40


def relay_pending(max_batches: int = MAX_BATCHES_PER_RUN) -> int:
    """Relay unpublished outbox rows batch by batch, each batch in its own transaction."""
    published = 0
    with app.connection_for_write() as connection:
        for _ in range(max_batches):
            with session_factory().begin() as session:
                sent = relay_batch(session, connection)
            published += sent
            if sent < RELAY_BATCH:
                break
    return published


@own_transactions_task("events.publish", args=NoArgs, result=PublishResult, ignore_result=True)
def publish_task(reporter: ProgressReporter, args: NoArgs) -> PublishResult:
    """Relay unpublished outbox events to the `matching.events` topic exchange."""
    # Rows committed from here on queue another run; this one may have read past them.
    mark_started(RELAY)
    return {"published": relay_pending()}
