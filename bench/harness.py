"""What every benchmark needs: its own database, a statement counter, timing, memory."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from kombu.connection import Connection as BrokerConnection
from kombu.entity import Queue
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import make_url

from core.db import get_bookkeeping_engine, get_engine, session_factory
from core.relay import EVENTS_EXCHANGE
from core.settings import get_settings
from runtime.children import Child
from runtime.embedded import DEFAULT_HOME
from runtime.migrate import recreate_schema, upgrade_head
from runtime.polling import poll_until
from runtime.stack import StackError, wait_for_worker
from workers.app import app

BENCH_LOGS = DEFAULT_HOME / "logs" / "bench"


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


@contextmanager
def bound_to_events(
    connection: BrokerConnection, name: str, routing_key: str = "#"
) -> Iterator[Queue]:
    """A queue bound to `matching.events` for the block, deleted after it: kombu's Redis
    transport keeps an auto-delete queue's binding, and every later relay would push a
    copy of each event into it, for good."""
    queue = Queue(name, exchange=EVENTS_EXCHANGE, routing_key=routing_key, auto_delete=True)
    queue(connection.default_channel).declare()
    try:
        yield queue
    finally:
        queue(connection.default_channel).delete()


def take_events(connection: BrokerConnection, queue: Queue) -> list[dict[str, Any]]:
    """Every event body waiting in `queue`, which is left empty."""
    bound = queue(connection.default_channel)
    bodies = []
    while (message := bound.get(no_ack=True)) is not None:
        bodies.append(message.payload)
    return bodies


def worker_argv(name: str, *celery_args: str) -> list[str]:
    """`matchops worker` arguments for a bench worker that `wait_for_workers` can ping."""
    return ["worker", "-n", node_name(name), "--without-gossip", "--without-mingle", *celery_args]


def node_name(name: str) -> str:
    """The Celery node name of the bench worker `name`."""
    return f"bench-{name}-{os.getpid()}@{socket.gethostname()}"


@contextmanager
def processes(env: dict[str, str] | None = None, **parts: list[str]) -> Iterator[dict[str, Child]]:
    """`matchops` subcommands (name=argv) as child processes for the block, with `env`
    added to this process's environment; logs under .matchops/logs/bench/."""
    children = {
        name: Child.matchops(name, argv, BENCH_LOGS / f"{name}.log", env)
        for name, argv in parts.items()
    }
    try:
        for child in children.values():
            child.start()
        yield children
    finally:
        for child in children.values():
            child.terminate()
        for child in children.values():
            child.wait(30)


def wait_for_workers(children: dict[str, Child], *names: str, timeout: float = 90) -> None:
    """Block until each named bench worker answers a ping."""
    for name in names:
        wait_for_worker(app, children[name], node_name(name), timeout)


def wait_for_api(http: httpx.Client, timeout: float = 60) -> None:
    """Block until the API at `http`'s base URL answers /readyz."""

    def ready() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return http.get("/readyz").status_code == 200
        return False

    if not poll_until(ready, timeout):
        raise StackError(f"the API did not get ready within {timeout:g}s")
