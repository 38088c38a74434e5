"""Relaying outbox rows to the `matching.events` topic exchange."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange
from sqlalchemy import Connection as Database
from sqlalchemy import Integer, bindparam, func, select, update
from sqlalchemy.orm import Session

from core import tracing
from core.db import bookkeeping_transaction
from core.outages import publish_batch
from core.results import TaskResult
from models.platform import OutboxEvent

EVENTS_EXCHANGE = Exchange("matching.events", type="topic", durable=True)
RELAY_BATCH = 500
# How a relay task retries a publish the broker refused (kombu's `Connection.ensure`).
RELAY_RETRY_POLICY: Mapping[str, float] = {"max_retries": 3}
# One run relays at most this many batches, then leaves the rest to the next tick,
# so a large backlog never holds a worker past its time limit.
MAX_BATCHES_PER_RUN = 40

# The oldest `limit` unpublished events, claimed and marked published in one statement.
# The rows stay locked (FOR UPDATE SKIP LOCKED) until the relay's transaction ends, so a
# second relay running at the same time skips them; a publish that fails rolls the mark
# back. Built once: SQLAlchemy only looks up its compiled form at each run.
CLAIM_BATCH = (
    update(OutboxEvent)
    .where(
        OutboxEvent.id.in_(
            select(OutboxEvent.id)
            .where(OutboxEvent.published_at.is_(None))
            .order_by(OutboxEvent.id)
            .limit(bindparam("limit", type_=Integer))
            .with_for_update(skip_locked=True)
        )
    )
    .values(published_at=func.now())
    .returning(
        OutboxEvent.id,
        OutboxEvent.event_id,
        OutboxEvent.type,
        OutboxEvent.occurred_at,
        OutboxEvent.data,
        OutboxEvent.traceparent,
    )
)


class PublishResult(TaskResult):
    """Outbox events relayed by one run."""

    published: int


def relay_batch(
    database: Database,
    connection: Connection,
    limit: int = RELAY_BATCH,
    retry_policy: Mapping[str, float] = RELAY_RETRY_POLICY,
) -> int:
    """Publish up to `limit` unpublished events and mark them published, each publish
    retried as `retry_policy` says.

    The claim marks the rows in the transaction `database` is in (`CLAIM_BATCH`): a
    publish that fails raises, and the caller's rollback leaves the events for the next
    run. A crash between publish and commit resends the batch: delivery is at-least-once
    and consumers drop repeats by `event_id`.
    """
    claimed = database.execute(CLAIM_BATCH, {"limit": limit}).all()
    if not claimed:
        return 0
    producer = connection.Producer(serializer="json")
    publish = connection.ensure(producer, producer.publish, **retry_policy)
    # Oldest first: RETURNING gives the rows in no set order.
    rows = sorted(claimed, key=lambda row: row.id)
    with publish_batch(producer, len(rows)):
        for row in rows:
            with tracing.relaying(row.type, row.event_id, row.traceparent) as headers:
                publish(
                    event_body(row.event_id, row.type, row.occurred_at, row.data),
                    exchange=EVENTS_EXCHANGE,
                    routing_key=row.type,
                    declare=[EVENTS_EXCHANGE],
                    delivery_mode=2,
                    headers=headers,
                )
    return len(rows)


def relay_pending(
    connect: Callable[[], Connection],
    max_batches: int = MAX_BATCHES_PER_RUN,
    retry_policy: Mapping[str, float] = RELAY_RETRY_POLICY,
) -> int:
    """Relay unpublished outbox rows batch by batch, over one broker connection from
    `connect` (the app's `connection_for_write`).

    Each batch is marked in a transaction of its own on a bookkeeping connection
    (`core.db.bookkeeping_transaction`): the marks are bookkeeping whose loss in a
    database crash republishes the batch, which consumers drop by `event_id` (delivery
    is at-least-once anyway), so their commit does not wait for the WAL flush, which
    would hold the process that relays, usually the one that just committed the events,
    for a disk write.
    """
    published = 0
    with connect() as connection:
        for _ in range(max_batches):
            with bookkeeping_transaction() as database:
                sent = relay_batch(database, connection, retry_policy=retry_policy)
            published += sent
            if sent < RELAY_BATCH:
                break
    return published


def event_body(
    event_id: Any, event_type: str, occurred_at: Any, data: dict[str, Any]
) -> dict[str, Any]:
    """The JSON body of the contract, section 5."""
    return {
        "event_id": str(event_id),
        "type": event_type,
        "occurred_at": occurred_at.astimezone(UTC).isoformat(),
        "data": data,
    }


def count_stuck(session: Session, older_than_seconds: int) -> int:
    """Unpublished events older than the given age: the relay has fallen behind or stopped."""
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds)
    return int(
        session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(OutboxEvent.published_at.is_(None), OutboxEvent.occurred_at < cutoff)
        )
        or 0
    )
