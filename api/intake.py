"""The API's intake: concurrent enqueues recorded together, one commit for many.

A commit waits for PostgreSQL to flush its WAL to disk (about 9 ms on this class of
machine), and a connection commits one transaction at a time. Each request therefore
parks its prepared task here and awaits a future; one writer thread takes whatever has
gathered, records it all with a single statement (api.submission.record_tasks), wakes
the requests; the commit notifies the dispatchers, which publish. Under load a batch
holds as many tasks as arrived during the previous commit, so throughput grows with
concurrency while each caller still gets its 202 only after its row is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from api.errors import ApiError, unavailable
from api.submission import NewTask, record_tasks
from core.outages import DATABASE, DATABASE_ERRORS

logger = logging.getLogger("api")

# Tasks recorded by one statement at the most; the rest go in the next one.
MAX_BATCH = 500


@dataclass(frozen=True)
class _Parked:
    task: NewTask
    answer: asyncio.Future[str]
    loop: asyncio.AbstractEventLoop


class Intake:
    """Records tasks in batches from one writer thread; `record` awaits its task's turn."""

    def __init__(self, engine: Engine) -> None:
        # Autocommit: the one insert statement is its own transaction.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._parked: queue.SimpleQueue[_Parked | None] = queue.SimpleQueue()
        self._connection: Connection | None = None
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Record what is parked, then stop."""
        self._parked.put(None)
        self._thread.join(timeout)

    async def record(self, task: NewTask) -> str:
        """The task id the caller gets, once committed; raises the ApiError refusing it."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()
        self._parked.put(_Parked(task, answer, loop))
        return await answer

    def _run(self) -> None:
        while True:
            first = self._parked.get()
            batch = [first] if first is not None else []
            while len(batch) < MAX_BATCH:
                try:
                    item = self._parked.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    first = None
                else:
                    batch.append(item)
            if batch:
                self._record(batch)
            if first is None:
                self._forget_connection()
                return

    def _record(self, batch: list[_Parked]) -> None:
        try:
            # The writer keeps its connection: no pool checkout and ping per batch.
            if self._connection is None:
                self._connection = self._engine.connect()
            answers: list[str | ApiError] = record_tasks(
                self._connection, [parked.task for parked in batch]
            )
        except DATABASE_ERRORS as exc:
            logger.warning("database unreachable while recording %d task(s): %s", len(batch), exc)
            answers = [unavailable(DATABASE)] * len(batch)
            self._forget_connection()
        settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[str], str | ApiError]]]
        settled = {}
        for parked, answer in zip(batch, answers, strict=True):
            settled.setdefault(parked.loop, []).append((parked.answer, answer))
        # One wake-up of each event loop for the whole batch.
        for loop, answered in settled.items():
            loop.call_soon_threadsafe(_settle, answered)

    def _forget_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(*DATABASE_ERRORS):
                self._connection.invalidate()
                self._connection.close()
            self._connection = None


def _settle(answered: list[tuple[asyncio.Future[str], str | ApiError]]) -> None:
    for future, answer in answered:
        if future.done():  # the caller went away
            continue
        if isinstance(answer, ApiError):
            future.set_exception(answer)
        else:
            future.set_result(answer)
