"""Handing accepted tasks to the broker, and handing them again when they went missing.

PostgreSQL holds every accepted task (`task_runs`); the broker only carries a message
to a worker. A task is published after the transaction that records it has committed,
and published again by `claim_due` when it has no outcome long after its last
dispatch and nobody is running it: a message lost with the broker's data, a worker
killed outright, a crash between commit and publish all end with the task run.
Countdowns wait here too, so the broker never holds a long ETA.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import Connection, func, select, update

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


@dataclass(frozen=True)
class Dispatch:
    """One task to publish: its id, name and JSON keyword arguments."""

    task_id: str
    name: str
    args: dict[str, Any]


def publish(app: Celery, dispatches: Sequence[Dispatch]) -> None:
    """Publish the tasks over one pooled connection; raises the broker's error.

    Results are read from `task_runs`, so the result backend stores none for them
    (one Redis write less per task) and the publisher subscribes to no result channel.
    """
    if not dispatches:
        return
    with app.producer_or_acquire() as producer:
        for dispatch in dispatches:
            app.send_task(
                dispatch.name,
                kwargs=dispatch.args,
                task_id=dispatch.task_id,
                producer=producer,
                ignore_result=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )


def claim_due(
    connection: Connection, redispatch_after: int, limit: int = CLAIM_BATCH
) -> list[Dispatch]:
    """Mark as dispatched now, and return, the unfinished tasks that are due.

    Due: a countdown that has run out and was never published, or a publish older
    than `redispatch_after` seconds without an outcome. A task running right now holds
    its row locked (workers.base) and is skipped, like rows another dispatcher claims.
    """
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, redispatch_after)
    due = (
        select(TaskRun.task_id)
        .where(
            TaskRun.finished_at.is_(None),
            TaskRun.due_at <= func.now(),
            TaskRun.dispatched_at.is_(None) | (TaskRun.dispatched_at < cutoff),
        )
        .order_by(TaskRun.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = connection.execute(
        update(TaskRun)
        .where(TaskRun.task_id.in_(due.scalar_subquery()))
        .values(dispatched_at=func.now())
        .returning(TaskRun.task_id, TaskRun.name, TaskRun.args)
    ).all()
    return [Dispatch(str(row.task_id), row.name, row.args) for row in rows]


def release(connection: Connection, dispatches: Sequence[Dispatch]) -> None:
    """Mark tasks whose publish failed as never dispatched, so the next scan retries them."""
    if dispatches:
        connection.execute(
            update(TaskRun)
            .where(
                TaskRun.task_id.in_([uuid.UUID(d.task_id) for d in dispatches]),
                TaskRun.finished_at.is_(None),
            )
            .values(dispatched_at=None)
        )
