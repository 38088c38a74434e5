"""Refused enqueues, counted by HTTP status for `matchops_enqueue_refused_total{status}`.

A refused call records no task, so the count needs a home of its own: the
`enqueue_refusals` table, which every API process adds to and `/metrics` reads
(core.metrics), whichever process a scrape reaches. A refusal costs the request an
increment in memory; a background thread adds what gathered once a second, in one
statement, and not at all while nothing was refused.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from sqlalchemy.dialects.postgresql import insert

from core.db import get_bookkeeping_engine
from models.platform import EnqueueRefusal

logger = logging.getLogger("api")

FLUSH_INTERVAL_SECONDS = 1.0

_ADD = insert(EnqueueRefusal)
ADD_REFUSALS = _ADD.on_conflict_do_update(
    index_elements=[EnqueueRefusal.status],
    set_={"refused": EnqueueRefusal.refused + _ADD.excluded.refused},
)


class Refusals:
    """Counts refusals in memory and adds them to `enqueue_refusals` in the background."""

    def __init__(self) -> None:
        self._counted: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="refusals", daemon=True)

    def count(self, status: int) -> None:
        """One enqueue refused with `status`."""
        with self._lock:
            self._counted[status] += 1

    def start(self) -> None:
        """Start adding in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Add what is left, then stop."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.flush()

    def flush(self) -> None:
        """Add what was counted since the last flush; kept for the next one if that fails."""
        with self._lock:
            counted, self._counted = self._counted, Counter()
        if not counted:
            return
        rows = [{"status": status, "refused": n} for status, n in sorted(counted.items())]
        try:
            with get_bookkeeping_engine().connect() as connection:
                connection.execute(ADD_REFUSALS, rows)
        except Exception as exc:  # the thread outlives any failed write; nothing is lost
            logger.warning("cannot record %d refused enqueue(s): %s", counted.total(), exc)
            with self._lock:
                self._counted.update(counted)

    def _run(self) -> None:
        while not self._stopping.wait(FLUSH_INTERVAL_SECONDS):
            self.flush()
