"""The outbox relay task."""

from __future__ import annotations

from sqlalchemy import exists, select

from core.followups import Due
from core.relay import PublishResult, relay_pending
from models import OutboxEvent
from workers.app import app
from workers.base import NoArgs, ProgressReporter, own_transactions_task
from workers.specs import Periodic
from workers.triggers import mark_started


# Commits that write outbox rows run the relay; beat's tick picks up what a lost trigger
# left, while an unpublished row waits.
@own_transactions_task(
    "events.publish",
    args=NoArgs,
    result=PublishResult,
    queue="events",
    periodic=Periodic("relay-events", every=10.0, expires=9),
    work_waiting=select(exists().where(OutboxEvent.published_at.is_(None))),
    followup=Due.RELAY,
    ignore_result=True,
)
def publish_task(reporter: ProgressReporter, args: NoArgs) -> PublishResult:
    """Relay unpublished outbox events to the `matching.events` topic exchange."""
    # Rows committed from here on queue another run; this one may have read past them.
    mark_started(publish_task.spec.followup)
    return {"published": relay_pending(app.connection_for_write)}
