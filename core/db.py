"""One engine per process and the session factory tasks and the API use."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings
from core.tracing import trace_engine

# A dead database must surface as an outage within seconds (the task base retries, the
# API answers 503), not hold every caller.
CONNECT_TIMEOUT_SECONDS = 5

# Whether a pooled connection is pinged as it is checked out. The API pings: a connection
# the database dropped would otherwise answer one client with a 503. Worker processes do
# not (`check_connections_on_use`): a ping is a round trip per task, a tenth of a short
# task's time, and a task that meets a dropped connection is retried by the task base
# while the pool replaces every connection as old as that one.
_ping_on_checkout = True


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
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
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
    return trace_engine(
        create_engine(
            settings.db_url,
            isolation_level="AUTOCOMMIT",
            pool_size=2,
            max_overflow=3,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "options": "-c synchronous_commit=off",
            },
        )
    )


def libpq_conninfo() -> str:
    """DATABASE_URL as libpq takes it, for a psycopg connection outside the engines."""
    url = make_url(get_settings().db_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


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
