"""Handing accepted tasks to the broker, and handing them again when they went missing.

PostgreSQL holds every accepted task; the broker only carries a message to a worker.
The task store (core.task_store) decides which tasks to publish (its claims, step 3 of
a task's life); this module publishes them over the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery

from core import tracing
from core.context import RECORDED_CALLER_HEADER, REDISPATCH_HEADER
from core.outages import BROKER_ERRORS, publish_batch
from core.task_store import Dispatch

logger = logging.getLogger("matchops.dispatch")

# A refused broker should become visible within a second, not after Celery's default
# publish retries.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# A probe can also meet a refused or reset socket before kombu wraps it.
BROKER_PROBE_ERRORS: tuple[type[Exception], ...] = (*BROKER_ERRORS, OSError)


def publish(app: Celery, dispatches: Sequence[Dispatch]) -> None:
    """Publish the tasks over one pooled connection; raises the broker's error.

    The outcome of a task the API accepted is read from `task_runs`, so the result
    backend stores none for it (one Redis write less per task). A task a sibling sent
    with `send_task`, handed out again after its message went missing, stores its result
    as its task declares: the sibling may be waiting on `.get()`.
    The claim goes out as one batch (`publish_batch`). An error leaves the whole claim to
    be released and claimed again.
    """
    if not dispatches:
        return
    with app.producer_or_acquire() as producer, publish_batch(producer, len(dispatches)):
        for dispatch in dispatches:
            with tracing.dispatching(dispatch.name, dispatch.task_id, dispatch.traceparent):
                app.send_task(
                    dispatch.name,
                    kwargs=dispatch.args,
                    task_id=dispatch.task_id,
                    producer=producer,
                    ignore_result=True if dispatch.origin == "api" else None,
                    retry_policy=PUBLISH_RETRY_POLICY,
                    headers=message_headers(dispatch),
                    # What Flower shows of the call, given here: Celery would build it
                    # with its safe repr, a walk in Python over the args.
                    argsrepr="()",
                    kwargsrepr=kwargs_repr(app, dispatch.args),
                )


def kwargs_repr(app: Celery, args: dict[str, Any]) -> str:
    """The task's keyword arguments as the message's `kwargsrepr` header shows them,
    cut as Celery cuts them (the app's `kwargsrepr_maxsize`). The args were decoded from
    JSON, so Python's own repr is safe on them, and a tenth of a publish cheaper."""
    text = repr(args)
    limit: int = app.amqp.kwargsrepr_maxsize
    return text if len(text) <= limit else text[: limit - 3] + "..."


def message_headers(dispatch: Dispatch) -> dict[str, Any]:
    """Who the task runs for, and whether a delivery of it may have run before (the
    task base then counts the delivery before its work, not with its outcome)."""
    headers: dict[str, Any] = {RECORDED_CALLER_HEADER: dispatch.caller}
    if dispatch.again:
        headers[REDISPATCH_HEADER] = True
    return headers


def check_broker(app: Celery, timeout: float) -> None:
    """Raise unless the broker accepts a connection within `timeout` seconds."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=timeout
        )
