"""Watching the `matching.events` exchange as a consumer service would."""

from __future__ import annotations

import json
import time
from collections import Counter
from types import TracebackType
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue
from sqlalchemy import func, select

from core.db import session_factory
from core.relay import EVENTS_EXCHANGE
from demo.client import ApiClient
from models.platform import OutboxEvent
from workers.app import app

# One fixed name: a demo that crashed leaves this queue behind, and the next demo
# empties and reuses it instead of leaving a new one to fill up forever.
TAP_QUEUE = "matchops.demo.events"


class EventTap:
    """A queue bound to `matching.events` with routing key `#`: it receives every event."""

    def __init__(self) -> None:
        self._connection: Connection | None = None
        self._queue: Queue | None = None

    def __enter__(self) -> EventTap:
        self._connection = app.connection_for_write()
        queue = Queue(TAP_QUEUE, exchange=EVENTS_EXCHANGE, routing_key="#", durable=False)
        self._queue = queue(self._connection.default_channel)
        self._queue.declare()
        self._queue.purge()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._queue is not None:
            self._queue.delete()
        if self._connection is not None:
            self._connection.release()

    def drain(self) -> list[dict[str, Any]]:
        """Every event body received so far (each is taken off the queue)."""
        assert self._queue is not None, "use EventTap as a context manager"
        bodies = []
        while (message := self._queue.get(no_ack=True)) is not None:
            body = message.body
            bodies.append(json.loads(body) if isinstance(body, (str, bytes)) else body)
        return bodies


def unpublished_events() -> int:
    """Outbox rows the relay has not published yet."""
    with session_factory().begin() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.published_at.is_(None))
            )
            or 0
        )


def relay_and_count(client: ApiClient, tap: EventTap, timeout: float = 15) -> dict[str, int]:
    """Relay the outbox through the API until it is empty, then count events by type.

    Commits trigger the relay anyway; asking for `events.publish` as well makes sure
    the demo's last events have arrived before it counts them.
    """
    deadline = time.monotonic() + timeout
    while True:
        client.call("events.publish", {}, wait=10)
        if unpublished_events() == 0 or time.monotonic() > deadline:
            break
    return dict(sorted(Counter(str(body["type"]) for body in tap.drain()).items()))
