"""One classification of outages, shared by the API, the CLI and the task base.

An outage is a part that did not answer or refused us: worth a 503 naming it (API,
CLI) or another try after a pause (tasks). Anything else is a bug or a refusal of the
request itself, and is neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import amqp.exceptions
import kombu.exceptions
import psycopg
import redis.exceptions
import sqlalchemy.exc

DATABASE = "database"
BROKER = "broker"
RESULT_BACKEND = "result backend"

# Deadlocks and serialization failures arrive as OperationalError too: a retry is
# the right answer to them as well. A full connection pool is TimeoutError. psycopg's
# own errors are what the API's intake meets on its connection outside SQLAlchemy.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
# AMQP refusals (NotAllowed for a vhost, AccessRefused) are connection errors of the
# amqp library that kombu does not always wrap.
BROKER_ERRORS: tuple[type[Exception], ...] = (
    kombu.exceptions.OperationalError,
    amqp.exceptions.ConnectionError,
)
RESULT_BACKEND_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

OUTAGES: tuple[tuple[str, tuple[type[Exception], ...]], ...] = (
    (DATABASE, DATABASE_ERRORS),
    (BROKER, BROKER_ERRORS),
    (RESULT_BACKEND, RESULT_BACKEND_ERRORS),
)

# What a task retries with backoff: every outage, and a socket that broke under us.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    *DATABASE_ERRORS,
    *BROKER_ERRORS,
    *RESULT_BACKEND_ERRORS,
    ConnectionError,
)


def waited_for_lock(error: BaseException) -> bool:
    """Whether `error` is a statement giving up on another transaction's lock
    (`lock_timeout`): a transient error whose holder may be a silent client that the
    server has yet to cut off, so it is worth another try only after a while."""
    cause = getattr(error, "orig", None) or error
    return isinstance(cause, psycopg.errors.LockNotAvailable)


def component_of(error: BaseException) -> str | None:
    """The part an outage error belongs to, or None when the error is no outage."""
    for component, errors in OUTAGES:
        if isinstance(error, errors):
            return component
    return None


@contextmanager
def publish_batch(producer: Any, size: int) -> Iterator[None]:
    """Publishes on `producer` inside the block go out together as it ends: on Redis in one
    pipeline (kombu's publish batch), one round trip instead of one per message and bound
    queue; RabbitMQ still confirms each as it goes.

    The pipeline is sent outside kombu's retrying publish, so its failure is the
    transport's own error: it is raised here as the broker error it is, which callers
    and the task base treat as an outage. Nothing of a failed batch counts as sent.
    """
    failures = producer.connection.connection_errors + producer.connection.channel_errors
    try:
        with producer.batch(max_size=size):
            yield
    except kombu.exceptions.OperationalError as exc:
        # kombu's own wrapping keeps only the text of what it wraps, and a broker's
        # negative confirm has none: name the cause, or the retries log an empty error.
        if str(exc):
            raise
        raise kombu.exceptions.OperationalError(_named(exc.__cause__ or exc.__context__)) from exc
    except failures as exc:
        raise kombu.exceptions.OperationalError(_named(exc)) from exc


def _named(exc: BaseException | None) -> str:
    """An exception's full type name, and its text when it has one."""
    if exc is None:
        return "the broker refused the publish"
    name = f"{type(exc).__module__}.{type(exc).__name__}"
    return f"{name}: {exc}" if str(exc) else name
