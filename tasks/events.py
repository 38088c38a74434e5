"""The outbox relay task."""

from __future__ import annotations

from core.db import session_factory
from core.followups import RELAY
from core.relay import PublishResult, relay_pending
from workers.app import app
from workers.base import NoArgs, ProgressReporter, own_transactions_task
from workers.triggers import mark_started


@own_transactions_task("events.publish", args=NoArgs, result=PublishResult, ignore_result=True)
def publish_task(reporter: ProgressReporter, args: NoArgs) -> PublishResult:
    """Relay unpublished outbox events to the `matching.events` topic exchange."""
    # Rows committed from here on queue another run; this one may have read past them.
    mark_started(RELAY)
    return {"published": relay_pending(session_factory(), app.connection_for_write)}
