"""The dispatcher thread: publishes accepted tasks off the request path.

The API hands it each task it has just committed (`submit`), and it publishes them in
batches over one broker connection, so an enqueue costs the caller one insert. Every
`DISPATCH_INTERVAL_SECONDS` it also claims what is due (core.dispatch.claim_due):
countdowns that ran out and tasks to dispatch again. Several dispatchers (every API
process, beat) share that work through SKIP LOCKED claims.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from celery import Celery
from sqlalchemy import Engine

from core.dispatch import Dispatch, claim_due, publish, release
from core.outages import BROKER_ERRORS, DATABASE_ERRORS

logger = logging.getLogger("matchops.dispatch")

# Handed-over tasks published in one go at the most; the rest follow at once.
PUBLISH_BATCH = 200
PROBE_TIMEOUT_SECONDS = 2.0
# A probe can also meet a refused or reset socket before kombu wraps it.
BROKER_PROBE_ERRORS: tuple[type[Exception], ...] = (*BROKER_ERRORS, OSError)


class Dispatcher:
    """Publishes submitted tasks and due tasks from one background thread."""

    def __init__(
        self, app: Celery, engine: Engine, *, interval: float, redispatch_after: int
    ) -> None:
        self._app = app
        # Autocommit: each claim or release stands alone, and no transaction stays open.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._interval = interval
        self._redispatch_after = redispatch_after
        self._handed: queue.SimpleQueue[Dispatch | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        # Why the broker refused the last publish or probe; None while it answers.
        self.broker_error: str | None = None

    def start(self) -> None:
        """Probe the broker (so a refusal is known before the first enqueue), then run."""
        self._probe_broker()
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Publish what was handed over, then stop the thread."""
        self._stopping.set()
        self._handed.put(None)
        self._thread.join(timeout)

    def submit(self, dispatch: Dispatch) -> None:
        """Publish this committed task soon, from the dispatcher's thread."""
        self._handed.put(dispatch)

    def _run(self) -> None:
        next_scan = time.monotonic()
        while True:
            batch = self._take(timeout=max(0.0, next_scan - time.monotonic()))
            if batch:
                self._publish(batch)
            if self._stopping.is_set() and self._handed.empty():
                return
            if time.monotonic() >= next_scan:
                self._scan()
                next_scan = time.monotonic() + self._interval

    def _take(self, timeout: float) -> list[Dispatch]:
        batch: list[Dispatch] = []
        try:
            first = self._handed.get(timeout=timeout)
        except queue.Empty:
            return batch
        if first is not None:
            batch.append(first)
        while len(batch) < PUBLISH_BATCH:
            try:
                item = self._handed.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                batch.append(item)
        return batch

    def _publish(self, batch: list[Dispatch]) -> bool:
        try:
            publish(self._app, batch)
        except BROKER_ERRORS as exc:
            self._broker_down(exc)
            self._release(batch)
            return False
        self.broker_error = None
        return True

    def _scan(self) -> None:
        if self.broker_error is not None and not self._probe_broker():
            return
        try:
            with self._engine.connect() as connection:
                due = claim_due(connection, self._redispatch_after)
        except DATABASE_ERRORS as exc:
            logger.warning("dispatcher: database unreachable: %s", exc)
            return
        if due:
            logger.info("dispatching %d due task(s)", len(due))
            self._publish(due)

    def _release(self, batch: list[Dispatch]) -> None:
        try:
            with self._engine.connect() as connection:
                release(connection, batch)
        except DATABASE_ERRORS as exc:
            # They will be dispatched again after REDISPATCH_AFTER_SECONDS instead.
            logger.warning("dispatcher: could not release %d task(s): %s", len(batch), exc)

    def _probe_broker(self) -> bool:
        try:
            with self._app.connection_for_write() as connection:
                connection.ensure_connection(
                    max_retries=1, interval_start=0, interval_step=0, timeout=PROBE_TIMEOUT_SECONDS
                )
        except BROKER_PROBE_ERRORS as exc:
            self._broker_down(exc)
            return False
        self.broker_error = None
        return True

    def _broker_down(self, exc: BaseException) -> None:
        if self.broker_error is None:
            logger.warning("dispatcher: broker unreachable: %s", exc)
        self.broker_error = str(exc) or type(exc).__name__
