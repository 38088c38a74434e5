"""What every benchmark needs: its own database, a statement counter, timing, memory."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import make_url

from core.db import get_bookkeeping_engine, get_engine, session_factory
from core.settings import get_settings
from runtime.migrate import recreate_schema, upgrade_head


def use_bench_database(name: str) -> str:
    """Point this process at a fresh, migrated scratch database `name` on DATABASE_URL's server.

    The benchmarks create millions of rows; they never touch the database the app uses.
    """
    url = make_url(get_settings().db_url).set(database=name)
    rendered = url.render_as_string(hide_password=False)
    recreate_schema(rendered)
    upgrade_head(rendered)
    os.environ["DATABASE_URL"] = rendered
    get_settings.cache_clear()
    get_engine.cache_clear()
    get_bookkeeping_engine.cache_clear()
    session_factory.cache_clear()
    return rendered


def autocommit_connection() -> Connection:
    """A connection where each statement commits by itself, for building bench data."""
    return get_engine().connect().execution_options(isolation_level="AUTOCOMMIT")


@dataclass
class StatementCount:
    """Statements sent to PostgreSQL inside a `count_statements` block."""

    value: int = 0


@contextmanager
def count_statements(engine: Engine | None = None) -> Iterator[StatementCount]:
    """Count every statement the engine executes while the block runs."""
    target = engine or get_engine()
    counter = StatementCount()
    # Statements may come from several threads at once (a sweep's lanes).
    lock = threading.Lock()

    def _count(*_: Any) -> None:
        with lock:
            counter.value += 1

    event.listen(target, "before_cursor_execute", _count)
    try:
        yield counter
    finally:
        event.remove(target, "before_cursor_execute", _count)


@dataclass
class Timing:
    """Wall-clock seconds of a `timed` block."""

    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timing]:
    """Measure the block's wall-clock time."""
    timing = Timing()
    started = time.perf_counter()
    try:
        yield timing
    finally:
        timing.seconds = time.perf_counter() - started


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(title: str, rows: list[tuple[str, str]]) -> None:
    """Print a block of `label: value` figures."""
    print(f"\n== {title}")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")
