"""The worker's consumer: Celery's own, sending task events in batches.

Celery buffers task events (received, started, succeeded, failed) and publishes the
buffer on the event loop's next turn, which under a steady stream of short tasks is one
broker round trip per event, made by the same loop that acknowledges messages and
hands them to the pool. Flushing at most every EVENT_FLUSH_SECONDS instead sends the
events of many tasks in one publish; Flower shows them that much later.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from core.supervision import EVENT_FLUSHER, Supervisor, fault_point

# Long enough to gather the events of several tasks, short enough that nobody watching
# Flower notices.
EVENT_FLUSH_SECONDS = 0.05


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, with task events flushed on a short timer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._event_flush_due = False
        self._flusher = Supervisor(EVENT_FLUSHER)

    def on_send_event_buffered(self) -> None:
        """Called by the event dispatcher for every buffered event: flush soon, once."""
        if self.hub is None or self._event_flush_due:
            return
        self._event_flush_due = True
        self.hub.call_later(EVENT_FLUSH_SECONDS, self._flush_due_events)

    def _flush_due_events(self) -> None:
        try:
            fault_point(EVENT_FLUSHER)
            self._flush_events()
        except Exception as error:
            # The hub would log it and go on, but no flush would be due until the next
            # event, and nothing would tell: back off, flush again, count it.
            self.hub.call_later(self._flusher.failed(error), self._restart_flusher)
            return
        self._event_flush_due = False

    def _restart_flusher(self) -> None:
        self._flusher.restarted()
        self._flush_due_events()

    def shutdown(self) -> None:
        """Send the events still waiting for their timer before the dispatcher closes."""
        self._flush_events()
        super().shutdown()
