"""Admission control: 429 for a queue too far behind to start new work in time.

With MAX_QUEUE_WAIT_SECONDS set, an enqueue is refused while the oldest accepted task
of its queue that is due and has not started has waited longer than that, or while a
task accepted now would wait longer than that at the pace the workers have been
starting the queue's tasks (submission.backlog): past that point a 202 would only
promise work nobody starts in time. Refusing records nothing, so a caller can come back
after `Retry-After`.

Deciding costs no query per request. A background thread reads every queue's backlog
(`read_backlogs`: one grouped read of the unfinished tasks, which the ledger's partial
index keeps small, and of the tasks finished in the last moments) every
`refresh_interval` seconds; a request compares the clock, and what this process
admitted since, with that read. Between two reads a queue's oldest wait only grows, so
the door closes on time, and what this process admits counts against the pace at once,
so a queue that drained does not take a whole limit's worth of the offered rate before
the next read; the door reopens at the first read after the backlog shrank. When the
read fails the door stays open: the enqueue meets the outage itself and answers 503
naming it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from api.errors import ApiError, api_error
from celeryconfig import QUEUE_NAMES
from core.db import get_bookkeeping_engine
from submission.backlog import IDLE, Backlog, fresh_pace, read_backlogs, refusal
from workers.specs import queue_of

logger = logging.getLogger("api")

# The longest the door takes to reopen after a queue drained.
MAX_REFRESH_SECONDS = 0.5


@dataclass
class _Seen:
    """A queue as the last read showed it, and what this process admitted since."""

    backlog: Backlog
    # The monotonic moment of the read.
    at: float
    admitted: int = 0


class Admission:
    """Knows each queue's backlog, read in the background; `refusal` decides at once."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.refresh_interval = min(MAX_REFRESH_SECONDS, (limit or 0) / 4)
        # Per queue, replaced whole by each read; a request only adds to its count.
        self._seen: dict[str, _Seen] = {}
        # Per queue, the latest pace measured and the monotonic moment of that read: kept
        # across reads that measure none, and used while fresh (`fresh_pace`).
        self._pace: dict[str, tuple[float, float]] = {}
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

    def refusal(self, name: str, *, due_now: bool = True) -> ApiError | None:
        """The 429 for enqueuing task `name` now, or None to go ahead; a task `due_now`
        (no countdown) that goes ahead counts as waiting in its queue until the next
        read."""
        if self.limit is None or self._failing:
            return None
        queue = queue_of(name)
        now = time.monotonic()
        seen = self._seen.get(queue)
        if seen is None:  # not read yet
            return None
        overloaded = refusal(
            queue,
            seen.backlog,
            self.limit,
            elapsed=now - seen.at,
            admitted=seen.admitted,
            pace=fresh_pace(self._pace.get(queue), now, self.limit),
        )
        if overloaded is not None:
            return api_error(overloaded)
        if due_now:
            seen.admitted += 1
        return None

    def _run(self) -> None:
        while not self._stopping.wait(self.refresh_interval):
            self._refresh()

    def _refresh(self) -> None:
        # Everything is caught: the thread must outlive any one failed read, and a read
        # that fails opens the door instead of leaving it as it was.
        if self.limit is None:
            return
        try:
            with get_bookkeeping_engine().connect() as connection:
                backlogs = read_backlogs(connection, self.limit)
        except Exception as exc:
            if not self._failing:
                logger.warning("admission control cannot read queue waits (door open): %s", exc)
            self._failing = True
            return
        if self._failing:
            logger.info("admission control reads queue waits again")
        self._failing = False
        now = time.monotonic()
        for queue, seen in backlogs.items():
            if (pace := seen.pace) is not None:
                self._pace[queue] = (pace, now)
        # Every queue, so that what is admitted into one the read found idle counts too.
        self._seen = {queue: _Seen(backlogs.get(queue, IDLE), now) for queue in QUEUE_NAMES}
