"""Tasks that outlive any time limit: each ignores the soft limit, as a task blocked where
the soft limit's exception cannot end it would, so only the hard limit stops it. Loaded
only by the workers of the time-limit tests (`-I tests.workers.held_task`)."""

from __future__ import annotations

import time
from typing import NoReturn

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from core.results import TaskResult
from workers.base import NoArgs, ProgressReporter, own_transactions_task, task

# In a transaction of its own, as most tasks run.
HELD_IN_TRANSACTION = "tests.held_in_transaction"
# Holding its `task_runs` row locked while it runs, as a task with its own transactions.
HELD_WITH_ROW_LOCKED = "tests.held_with_row_locked"


class NeverResult(TaskResult):
    """Nothing: the task never returns."""


def _outlive_every_limit() -> NoReturn:
    while True:
        try:
            time.sleep(60)
        except SoftTimeLimitExceeded:
            continue


@task(HELD_IN_TRANSACTION, args=NoArgs, result=NeverResult)
def held_in_transaction(session: Session, args: NoArgs) -> NeverResult:
    """Sleeps inside its transaction until the hard time limit kills it."""
    _outlive_every_limit()


@own_transactions_task(HELD_WITH_ROW_LOCKED, args=NoArgs, result=NeverResult)
def held_with_row_locked(reporter: ProgressReporter, args: NoArgs) -> NeverResult:
    """Sleeps while its row is locked until the hard time limit kills it."""
    _outlive_every_limit()


# A worker that loads these tasks, and the limits it runs them under.
WORKER_ARGS = ("-I", __name__)
LIMITS = {"TASK_SOFT_TIME_LIMIT": "1", "TASK_TIME_LIMIT": "2"}
KILLED = "killed at the hard time limit of 2 s (TASK_TIME_LIMIT)"
