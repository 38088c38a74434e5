"""The API's intake: concurrent enqueues recorded together, one commit for many.

A commit waits for PostgreSQL to flush its WAL to disk (about 9 ms on this class of
machine), and a connection commits one transaction at a time. Each request therefore
parks its prepared task here and awaits a future; one writer coroutine takes whatever
has gathered, records it all with a single statement (submission.service.record_tasks_async),
and resolves the futures; the commit notifies the dispatchers, which publish. Under
load a batch holds as many tasks as arrived during the previous commit, so throughput
grows with concurrency while each caller still gets its 202 only after its row is
committed.

The writer runs on the event loop with an asyncio connection of its own: no thread
competes with the loop for the interpreter, and no wake-up crosses threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from api.errors import unavailable
from core.outages import DATABASE, DATABASE_ERRORS
from core.supervision import INTAKE_WRITER, fault_point, supervise_async
from core.task_store import NewTask
from submission.service import record_tasks_async

logger = logging.getLogger("api")

# Tasks recorded by one statement at the most; the rest go in the next one.
MAX_BATCH = 500

_Parked = tuple[NewTask, "asyncio.Future[str]"]


class Intake:
    """Records tasks in batches from one writer coroutine; `record` awaits its task's turn."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._parked: list[_Parked] = []
        self._arrived: asyncio.Event | None = None
        self._stopping = False
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the writer on the running event loop."""
        self._stopping = False
        self._arrived = asyncio.Event()
        writer = supervise_async(INTAKE_WRITER, self._run, lambda: self._stopping)
        self._writer = asyncio.get_running_loop().create_task(writer, name="intake")

    async def stop(self) -> None:
        """Record what is parked, then stop."""
        self._stopping = True
        if self._arrived is not None and self._writer is not None:
            self._arrived.set()
            await self._writer
        await self._forget_connection()

    async def record(self, task: NewTask) -> str:
        """The task id the caller gets, once committed; raises the error refusing it."""
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._parked.append((task, answer))
        assert self._arrived is not None, "the intake records only once started"
        self._arrived.set()
        return await answer

    async def _run(self) -> None:
        arrived = self._arrived
        assert arrived is not None
        while True:
            # What parks during one commit is the next batch; after a restart, what
            # parked while the writer was down.
            while self._parked:
                batch = self._parked[:MAX_BATCH]
                del self._parked[:MAX_BATCH]
                await self._record(batch)
            if self._stopping:
                return
            await arrived.wait()
            arrived.clear()
            fault_point(INTAKE_WRITER)

    async def _record(self, batch: list[_Parked]) -> None:
        answers: Sequence[str | Exception] | BaseException
        try:
            # The writer keeps its connection: no pool checkout and ping per batch.
            if self._connection is None:
                # The conninfo carries the connection's timeouts (core.db.libpq_conninfo).
                self._connection = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                )
            answers = await record_tasks_async(self._connection, [task for task, _ in batch])
        except DATABASE_ERRORS as exc:
            logger.warning("database unreachable while recording %d task(s): %s", len(batch), exc)
            answers = [unavailable(DATABASE) for _ in batch]
            await self._forget_connection()
        except Exception as exc:  # a bug, not an outage: its callers answer 500, the writer goes on
            answers = exc
        for index, (_, future) in enumerate(batch):
            if future.done():  # the caller went away
                continue
            answer = answers if isinstance(answers, BaseException) else answers[index]
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def _forget_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except DATABASE_ERRORS:
                logger.debug("closing a broken intake connection failed", exc_info=True)
