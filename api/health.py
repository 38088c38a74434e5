"""Readiness: does PostgreSQL answer `SELECT 1`, does the broker accept a connection?"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from sqlalchemy import text

from core.db import get_engine
from core.dispatch import BROKER_PROBE_ERRORS
from core.dispatch import check_broker as check_broker_of
from core.supervision import BROKER_WATCH, down_here, down_in_fleet, fault_point, supervise
from workers.app import app

logger = logging.getLogger("api")

# A probe must answer quickly even when a dependency hangs instead of refusing.
CHECK_TIMEOUT_SECONDS = 2.0
PROBE_INTERVAL_SECONDS = 2.0
_probes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


def check_database() -> None:
    """Raise unless PostgreSQL answers `SELECT 1`."""
    with get_engine().connect() as connection:
        # SQL text: the probe is the one fixed statement this module names, no table in it.
        connection.execute(text("SELECT 1"))


def check_broker() -> None:
    """Raise unless the broker accepts a connection."""
    check_broker_of(app, CHECK_TIMEOUT_SECONDS)


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "broker": check_broker}


def readiness() -> tuple[dict[str, str], dict[str, str]]:
    """What this API depends on, and what is down elsewhere in the fleet.

    First `"ok"` or what went wrong, per dependency, within CHECK_TIMEOUT_SECONDS for
    all, with this process's own supervised parts (core.supervision) that are down: any
    of these makes the API unready. Then the supervised parts down in other processes
    that share the session store (a worker's dispatcher or event flusher), with why and
    where: named for the operator, but no reason to take this API out of service, which
    records tasks all the same while a worker's loop restarts.
    """
    futures = {name: _probes.submit(check) for name, check in CHECKS.items()}
    fleet = _probes.submit(down_in_fleet)
    pending: list[Future[Any]] = [*futures.values(), fleet]
    wait(pending, timeout=CHECK_TIMEOUT_SECONDS)
    answers = {}
    for name, future in futures.items():
        if not future.done():
            answers[name] = f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
        elif (error := future.exception()) is not None:
            # The details (hosts, ports) go to the log, not to an unauthenticated caller.
            logger.warning("readiness: %s unreachable: %s", name, error)
            answers[name] = "unreachable"
        else:
            answers[name] = "ok"
    answers.update(down_here())
    elsewhere = fleet.result() if fleet.done() and fleet.exception() is None else {}
    return answers, elsewhere


class BrokerWatch:
    """Knows, within PROBE_INTERVAL_SECONDS, whether the broker answers.

    The API does not publish (the dispatchers do), but an enqueue while the broker
    refuses would only wait in PostgreSQL: the route answers 503 naming it instead.
    """

    def __init__(self) -> None:
        self.down = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervised, name="broker-watch", daemon=True)

    def start(self) -> None:
        """Probe once now (so a refusal is known before the first enqueue), then keep at it."""
        self._probe()
        self._thread.start()

    def stop(self) -> None:
        """Stop probing."""
        self._stopping.set()
        self._thread.join(CHECK_TIMEOUT_SECONDS + 1)

    def _supervised(self) -> None:
        supervise(BROKER_WATCH, self._run, self._stopping)

    def _run(self) -> None:
        while not self._stopping.wait(PROBE_INTERVAL_SECONDS):
            fault_point(BROKER_WATCH)
            self._probe()

    def _probe(self) -> None:
        try:
            check_broker()
        except BROKER_PROBE_ERRORS as exc:
            if not self.down:
                logger.warning("broker unreachable: %s", exc)
            self.down = True
        else:
            self.down = False
