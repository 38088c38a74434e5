"""The dispatcher thread: publishes accepted tasks once their records have committed.

It runs in every worker's main process and in beat (workers.signals), so publishing
costs the API nothing and a stack that can run tasks can always dispatch them. One
dispatcher leads: the one whose connection holds the session-level advisory lock
LEADER_LOCK. The leader LISTENs on `DISPATCH_CHANNEL`, which the commit of new tasks
notifies, and claims and publishes them at once (core.task_store.claim_fresh), so a
commit wakes one dispatcher, not all of them. Every DISPATCH_INTERVAL_SECONDS each
dispatcher, leader or standby, claims countdowns that ran out and tasks to dispatch
again (claim_lost); a standby also claims fresh tasks then (whatever a leader left), and
tries to take the lock. When the leader's session ends (its process died, its
connection broke) PostgreSQL releases the lock and a standby leads within an interval.
Several dispatchers share the work through SKIP LOCKED claims.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from celery import Celery
from sqlalchemy import Connection, Engine, Integer, func, select, text

from core.dispatch import BROKER_PROBE_ERRORS, check_broker, publish
from core.outages import BROKER_ERRORS, DATABASE_ERRORS
from core.supervision import DISPATCHER, fault_point, supervise
from core.task_store import (
    CLAIM_BATCH,
    DISPATCH_CHANNEL,
    Dispatch,
    claim_fresh,
    claim_lost,
    release,
)

logger = logging.getLogger("matchops.dispatch")

PROBE_TIMEOUT_SECONDS = 2.0
# Held, for as long as its session lasts, by the dispatcher that listens.
LEADER_LOCK = "matchops.dispatch.leader"
_LEADER_KEY = func.hashtext(LEADER_LOCK, type_=Integer)
TRY_LEAD = select(func.pg_try_advisory_lock(_LEADER_KEY))
STOP_LEADING = select(func.pg_advisory_unlock(_LEADER_KEY))


class Dispatcher:
    """Publishes tasks as their records commit (when leading), and lost or due ones
    every interval."""

    def __init__(
        self, app: Celery, engine: Engine, *, interval: float, redispatch_after: int
    ) -> None:
        self._app = app
        self._engine = engine
        self._interval = interval
        self._redispatch_after = redispatch_after
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervised, name="dispatcher", daemon=True)
        # Why the broker refused the last publish; None while it answers.
        self.broker_error: str | None = None
        # Whether this dispatcher holds LEADER_LOCK and listens.
        self.leading = False

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Stop after the current round."""
        self._stopping.set()
        self._thread.join(timeout)

    def _supervised(self) -> None:
        # Anything but an outage (a bug, an AMQP channel refusal) restarts the loop.
        supervise(DISPATCHER, self._run, self._stopping)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._serve()
            except DATABASE_ERRORS as exc:
                logger.warning("dispatcher: database unreachable: %s", exc)
                self._stopping.wait(self._interval)
            finally:
                self.leading = False

    def _serve(self) -> None:
        # One connection of its own, in autocommit: it holds the lock, listens, claims
        # and releases.
        with self._engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            try:
                self._rounds(connection)
            finally:
                if self.leading:
                    self._step_down(connection)

    def _rounds(self, connection: Connection) -> None:
        notices = connection.connection.driver_connection
        assert isinstance(notices, psycopg.Connection)
        next_interval = 0.0
        while not self._stopping.is_set():
            fault_point(DISPATCHER)
            interval_due = time.monotonic() >= next_interval
            if interval_due and not self.leading:
                self._try_to_lead(connection)
            if self.leading or interval_due:
                # Claimed in batches until none is left, so a burst is published at once.
                claimed = CLAIM_BATCH
                while claimed == CLAIM_BATCH:
                    claimed = self._dispatch(connection, claim_fresh)
            if interval_due:
                self._dispatch(connection, self._claim_lost)
                next_interval = time.monotonic() + self._interval
            wait = min(self._interval, max(0.0, next_interval - time.monotonic()))
            if self.leading:
                # Any notification means "look again": wait for one, take it and go.
                list(notices.notifies(timeout=wait, stop_after=1))
            else:
                self._stopping.wait(wait)

    def _try_to_lead(self, connection: Connection) -> None:
        if not connection.scalar(TRY_LEAD):
            return
        # SQL text: LISTEN names its channel as an identifier, which neither a bound
        # parameter nor a Core construct can supply; the channel is our constant.
        connection.execute(text(f"LISTEN {DISPATCH_CHANNEL}"))
        self.leading = True
        logger.info("dispatcher: leading (listening for new tasks)")

    def _step_down(self, connection: Connection) -> None:
        # The connection goes back to its pool: neither the lock nor the LISTEN may stay
        # with it. A connection that cannot say so is dropped, which ends both.
        try:
            connection.execute(text(f"UNLISTEN {DISPATCH_CHANNEL}"))
            connection.execute(STOP_LEADING)
        except DATABASE_ERRORS:
            connection.invalidate()

    def _claim_lost(self, connection: Connection) -> list[Dispatch]:
        return claim_lost(connection, self._redispatch_after)

    def _dispatch(
        self, connection: Connection, claim: Callable[[Connection], list[Dispatch]]
    ) -> int:
        if self.broker_error is not None and not self._probe_broker():
            return 0
        claimed = claim(connection)
        if claimed:
            try:
                publish(self._app, claimed)
            except BROKER_ERRORS as exc:
                self._broker_down(exc)
                release(connection, claimed)
                return 0
            self.broker_error = None
        return len(claimed)

    def _probe_broker(self) -> bool:
        try:
            check_broker(self._app, PROBE_TIMEOUT_SECONDS)
        except BROKER_PROBE_ERRORS as exc:
            self._broker_down(exc)
            return False
        self.broker_error = None
        return True

    def _broker_down(self, exc: BaseException) -> None:
        if self.broker_error is None:
            logger.warning("dispatcher: broker unreachable: %s", exc)
        self.broker_error = str(exc) or type(exc).__name__
