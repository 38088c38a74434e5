"""Handing accepted tasks to the broker, and handing them again when they went missing.

PostgreSQL holds every accepted task (`task_runs`); the broker only carries a message
to a worker. A task is published once the transaction that records it has committed
(`claim_fresh`), and published again (`claim_lost`) when it has no outcome long after
its last dispatch and nobody is running it: a message lost with the broker's data, a
worker killed outright, a crash between commit and publish all end with the task run.
Countdowns wait here too, so the broker never holds a long ETA.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import Connection, bindparam, func, select, update

from core import tracing
from core.outages import BROKER_ERRORS, publish_batch
from models.platform import TaskRun

logger = logging.getLogger("matchops.dispatch")

# A refused broker should become visible within a second, not after Celery's default
# publish retries.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CLAIM_BATCH = 500
# A probe can also meet a refused or reset socket before kombu wraps it.
BROKER_PROBE_ERRORS: tuple[type[Exception], ...] = (*BROKER_ERRORS, OSError)
MAX_BACKOFF_DOUBLINGS = 6
# Committing new tasks notifies this channel; dispatchers LISTEN on it.
DISPATCH_CHANNEL = "matchops_dispatch"


@dataclass(frozen=True)
class Dispatch:
    """One task to publish: its id, name and JSON keyword arguments."""

    task_id: str
    name: str
    args: dict[str, Any]
    # W3C traceparent stored with the task: every publish of it continues that trace.
    traceparent: str | None = None


def _marking(claimed: Any) -> Any:
    """The UPDATE that marks the rows `claimed` selects, returning what to publish."""
    return (
        update(TaskRun)
        .where(TaskRun.task_id.in_(claimed.scalar_subquery()))
        .returning(TaskRun.task_id, TaskRun.name, TaskRun.args, TaskRun.traceparent)
    )


# Run at every commit of new tasks by every dispatcher, so built once: building and
# hashing the statement cost more than running it on an empty claim.
CLAIM_FRESH = _marking(
    select(TaskRun.task_id)
    .where(TaskRun.dispatched_at.is_(None), TaskRun.due_at <= func.now())
    .order_by(TaskRun.due_at)
    .limit(bindparam("claim_limit"))
    .with_for_update(skip_locked=True)
).values(dispatched_at=func.now())


def publish(app: Celery, dispatches: Sequence[Dispatch]) -> None:
    """Publish the tasks over one pooled connection; raises the broker's error.

    Results are read from `task_runs`, so the result backend stores none for them
    (one Redis write less per task) and the publisher subscribes to no result channel.
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
                    ignore_result=True,
                    retry_policy=PUBLISH_RETRY_POLICY,
                )


def check_broker(app: Celery, timeout: float) -> None:
    """Raise unless the broker accepts a connection within `timeout` seconds."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=timeout
        )


def claim_fresh(connection: Connection, limit: int = CLAIM_BATCH) -> list[Dispatch]:
    """Mark as dispatched now, and return, tasks never published whose time has come:
    new ones, and countdowns that ran out. Rows another dispatcher claims are skipped."""
    return _dispatches(connection.execute(CLAIM_FRESH, {"claim_limit": limit}))


def claim_lost(
    connection: Connection, redispatch_after: int, limit: int = CLAIM_BATCH
) -> list[Dispatch]:
    """Mark as dispatched now, and return, tasks published more than `redispatch_after`
    seconds ago that have no outcome and that nobody is running.

    A task running right now holds its row locked (workers.base) and is skipped; a
    delivery on a host that vanished loses that lock within DB_SILENT_CLIENT_SECONDS
    (server keepalives, core.db.session_options), and only then is its task published
    again. The wait doubles with each redispatch (up to 64 times): a task that only sits
    in a long broker backlog is not copied into it again and again.
    """
    earliest = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, redispatch_after)
    backoff = func.power(2, func.least(TaskRun.redispatches, MAX_BACKOFF_DOUBLINGS))
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, redispatch_after * backoff)
    lost = (
        select(TaskRun.task_id)
        .where(
            TaskRun.finished_at.is_(None),
            TaskRun.dispatched_at < earliest,
            TaskRun.dispatched_at < cutoff,
        )
        .order_by(TaskRun.dispatched_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return _mark_dispatched(connection, lost, redispatch=True)


def _mark_dispatched(
    connection: Connection, claimed: Any, redispatch: bool = False
) -> list[Dispatch]:
    values: dict[str, Any] = {"dispatched_at": func.now()}
    if redispatch:
        values["redispatches"] = TaskRun.redispatches + 1
    return _dispatches(connection.execute(_marking(claimed).values(**values)))


def _dispatches(result: Any) -> list[Dispatch]:
    return [Dispatch(row.task_id, row.name, row.args, row.traceparent) for row in result]


def release(connection: Connection, dispatches: Sequence[Dispatch]) -> None:
    """Mark tasks whose publish failed as never dispatched, so the next scan retries them."""
    if dispatches:
        connection.execute(
            update(TaskRun)
            .where(
                TaskRun.task_id.in_([d.task_id for d in dispatches]),
                TaskRun.finished_at.is_(None),
            )
            .values(dispatched_at=None)
        )
