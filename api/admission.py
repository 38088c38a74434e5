"""Admission control: 429 for a queue whose oldest waiting task waits too long.

With MAX_QUEUE_WAIT_SECONDS set, an enqueue is refused while the oldest accepted task
of its queue that is due and has not started has waited longer than that: past that
point the workers are not keeping up, and a 202 would only promise work nobody starts
in time. Refusing records nothing, so a caller can come back after `Retry-After`.

Deciding costs no query per request. A background thread reads, every
`refresh_interval` seconds, since when each queue's oldest unstarted task has waited
(one grouped read of the unfinished tasks, which the ledger's partial index keeps
small); a request compares the clock with that moment. Between two reads a queue's wait
only grows, so the door closes on time; it reopens at the first read after the oldest
task started. When the read fails the door stays open: the enqueue meets the outage
itself and answers 503 naming it.
"""

from __future__ import annotations

import logging
import threading
import time

from api.errors import ApiError, api_error
from core.db import get_bookkeeping_engine
from submission.service import oldest_waits, refusal
from workers.specs import queue_of

logger = logging.getLogger("api")

# The longest the door takes to reopen after a queue drained.
MAX_REFRESH_SECONDS = 0.5


class Admission:
    """Knows each queue's oldest wait, read in the background; `refusal` decides at once."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.refresh_interval = min(MAX_REFRESH_SECONDS, (limit or 0) / 4)
        # Per queue, the monotonic moment its oldest unstarted task became due.
        self._waiting_since: dict[str, float] = {}
        self._failing = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="admission", daemon=True)

    def start(self) -> None:
        """Read once now, then keep reading; nothing at all without a limit."""
        if self.limit is None:
            return
        self._refresh()
        self._thread.start()

    def stop(self) -> None:
        """Stop reading."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def refusal(self, name: str) -> ApiError | None:
        """The 429 for enqueuing task `name` now, or None to go ahead."""
        if self.limit is None:
            return None
        queue = queue_of(name)
        since = self._waiting_since.get(queue)
        if since is None:
            return None
        overloaded = refusal(queue, time.monotonic() - since, self.limit)
        return None if overloaded is None else api_error(overloaded)

    def _run(self) -> None:
        while not self._stopping.wait(self.refresh_interval):
            self._refresh()

    def _refresh(self) -> None:
        # Everything is caught: the thread must outlive any one failed read, and a read
        # that fails opens the door instead of leaving it as it was.
        try:
            with get_bookkeeping_engine().connect() as connection:
                waits = oldest_waits(connection)
        except Exception as exc:
            if not self._failing:
                logger.warning("admission control cannot read queue waits (door open): %s", exc)
            self._failing = True
            self._waiting_since = {}
            return
        if self._failing:
            logger.info("admission control reads queue waits again")
        self._failing = False
        now = time.monotonic()
        self._waiting_since = {queue: now - waited for queue, waited in waits.items()}
