"""Waiting for outcomes without holding a thread per waiter.

Every `wait` of the API parks an asyncio future here; one poller asks PostgreSQL which
of all the awaited tasks have finished, in one statement every POLL_SECONDS, and wakes
their waiters. Hundreds of waiters cost one query per tick and no thread, so they
never starve the probes or other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection

from anyio import to_thread

from core.outages import DATABASE_ERRORS

POLL_SECONDS = 0.05


class OutcomeWaiters:
    """Futures per task id, resolved when `finished(ids)` lists the id."""

    def __init__(self, finished: Callable[[Collection[str]], set[str]]) -> None:
        self._finished = finished
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def wait(self, task_id: str, seconds: float) -> None:
        """Return once the task has finished, or after `seconds`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(task_id, []).append(future)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            with contextlib.suppress(TimeoutError):  # out of time: answer as GET would
                await asyncio.wait_for(asyncio.shield(future), seconds)
        finally:
            futures = self._waiting.get(task_id, [])
            if future in futures:
                futures.remove(future)
            if not futures:
                self._waiting.pop(task_id, None)

    async def _poll(self) -> None:
        while self._waiting:
            ids = list(self._waiting)
            try:
                done = await to_thread.run_sync(self._finished, ids)
            except DATABASE_ERRORS:  # the waiters time out and answer as GET would
                done = set()
            for task_id in done:
                for future in self._waiting.pop(task_id, []):
                    if not future.done():
                        future.set_result(None)
            await asyncio.sleep(POLL_SECONDS)
