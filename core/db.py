"""One engine per process and the session factory tasks and the API use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

from psycopg.conninfo import make_conninfo
from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, get_settings
from core.tracing import trace_engine

# A dead database must surface as an outage within seconds (the task base retries, the
# API answers 503), not hold every caller.
CONNECT_TIMEOUT_SECONDS = 5
# How often a backend running a long statement checks that its client is still there
# (PostgreSQL 14+), at most.
CLIENT_CHECK_SECONDS = 5

# Whether a pooled connection is pinged as it is checked out. The API pings: a connection
# the database dropped would otherwise answer one client with a 503. Worker processes do
# not (`check_connections_on_use`): a ping is a round trip per task, a large share of a
# short task's time, and a task that meets a dropped connection is retried by the task base
# while the pool replaces every connection as old as that one.
_ping_on_checkout = True


def session_options(settings: Settings, *, lock_timeout: bool = True) -> str:
    """The server settings every matchops session asks for, as libpq `options`.

    A client that goes silent (its host lost power or network, its process froze) must
    not keep its transaction and locks for TCP's own two hours: the server ends an idle
    transaction after DB_SILENT_CLIENT_SECONDS, probes an idle connection with
    keepalives that fail within that time, drops one whose sent data goes unacknowledged
    as long, and checks a running statement's client every few seconds. A lock wait
    gives up after DB_LOCK_TIMEOUT_MS (`lock_timeout=False`: never, for migrations,
    which must not fail because a task held a table for a moment). No
    statement_timeout: sweeps and rebuilds run long statements on purpose, and the
    task time limits bound them.
    """
    silent = settings.db_silent_client_seconds
    idle, interval, count = keepalive_schedule(silent)
    values = {
        "idle_in_transaction_session_timeout": f"{silent}s",
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": str(interval),
        "tcp_keepalives_count": str(count),
        "tcp_user_timeout": f"{silent * 1000}",
        "client_connection_check_interval": f"{min(CLIENT_CHECK_SECONDS, silent) * 1000}",
    }
    if lock_timeout:
        values["lock_timeout"] = f"{settings.db_lock_timeout_ms}"
    return " ".join(f"-c {name}={value}" for name, value in values.items())


def keepalive_schedule(silent: int) -> tuple[int, int, int]:
    """Keepalive idle time, interval and count whose probes give up within `silent` s."""
    idle = (silent + 1) // 2
    count = max(1, min(3, silent - idle))
    interval = max(1, (silent - idle) // count)
    return idle, interval, count


def connect_args(settings: Settings, *, lock_timeout: bool = True) -> dict[str, Any]:
    """libpq parameters of every connection matchops opens: a bounded connect, client
    keepalives and TCP user timeout (a database host that vanished is noticed within
    DB_SILENT_CLIENT_SECONDS, not when TCP gives up), and `session_options`."""
    idle, interval, count = keepalive_schedule(settings.db_silent_client_seconds)
    return {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": settings.db_silent_client_seconds * 1000,
        "options": session_options(settings, lock_timeout=lock_timeout),
    }


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process's engine. A forked worker replaces it before first use
    (`check_connections_on_use`, from workers.signals)."""
    settings = get_settings()
    return trace_engine(
        create_engine(
            settings.db_url,
            pool_pre_ping=_ping_on_checkout,
            pool_size=5,
            max_overflow=5,
            connect_args=connect_args(settings),
        )
    )


@lru_cache(maxsize=1)
def get_bookkeeping_engine() -> Engine:
    """Autocommit connections that commit without waiting for the disk.

    For bookkeeping whose loss in a database crash costs nothing but a repeat: delivery
    counts, dispatch marks, progress. A synchronous commit waits for the WAL flush
    (milliseconds on ordinary disks); these are visible to every other session at once
    all the same. Never for domain effects or for accepting a task.
    """
    settings = get_settings()
    arguments = connect_args(settings)
    arguments["options"] += " -c synchronous_commit=off"
    return trace_engine(
        create_engine(
            settings.db_url,
            isolation_level="AUTOCOMMIT",
            pool_size=2,
            max_overflow=3,
            connect_args=arguments,
        )
    )


@contextmanager
def bookkeeping_transaction() -> Iterator[Connection]:
    """One transaction on a bookkeeping connection (`get_bookkeeping_engine`): committed
    without waiting for the disk, rolled back if the block raises.

    For bookkeeping that must be undone when a step after its statement fails, such as the
    relay's marks (rolled back when a publish fails). The connection leaves autocommit
    for the block only; psycopg begins the transaction with the first statement, so the
    switch costs no round trip.
    """
    with get_bookkeeping_engine().connect() as connection:
        connection.execution_options(isolation_level="READ COMMITTED")
        with connection.begin():
            yield connection


def libpq_conninfo() -> str:
    """DATABASE_URL as libpq takes it, for a psycopg connection outside the engines,
    with the connection parameters the engines' connections have (`connect_args`)."""
    settings = get_settings()
    url = make_url(settings.db_url).set(drivername="postgresql")
    return make_conninfo(url.render_as_string(hide_password=False), **connect_args(settings))


@lru_cache(maxsize=1)
def session_factory() -> sessionmaker[Session]:
    """`with session_factory().begin() as session:` opens one transaction."""
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def check_connections_on_use() -> None:
    """For a forked worker process: drop the inherited pooled connections (without
    closing the parent's), and from now on find a dropped connection when a statement
    fails on it rather than by a ping at every checkout."""
    global _ping_on_checkout
    _ping_on_checkout = False
    for engine in (get_engine, get_bookkeeping_engine):
        if engine.cache_info().currsize:
            engine().dispose(close=False)
    get_engine.cache_clear()
    session_factory.cache_clear()


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE matched.

    `Session.execute` is typed to return a `Result`; for a DML statement it returns the
    `CursorResult` that carries the count.
    """
    return cast(CursorResult[Any], result).rowcount
