"""Readiness: does PostgreSQL answer `SELECT 1`, does the broker accept a connection?"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from sqlalchemy import text

from core.db import get_engine
from workers.app import app

logger = logging.getLogger("api")

# A probe must answer quickly even when a dependency hangs instead of refusing.
CHECK_TIMEOUT_SECONDS = 2.0
_probes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


def check_database() -> None:
    """Raise unless PostgreSQL answers `SELECT 1`."""
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))


def check_broker() -> None:
    """Raise unless the broker accepts a connection."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=CHECK_TIMEOUT_SECONDS
        )


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "broker": check_broker}


def readiness() -> dict[str, str]:
    """`"ok"` or what went wrong, per dependency, within CHECK_TIMEOUT_SECONDS for all."""
    futures = {name: _probes.submit(check) for name, check in CHECKS.items()}
    wait(futures.values(), timeout=CHECK_TIMEOUT_SECONDS)
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
    return answers
