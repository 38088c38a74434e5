"""Tasks that outlive any time limit: each ignores the soft limit, as a task blocked where
the soft limit's exception cannot end it would, so only the hard limit stops it. Loaded
only by the workers of the time-limit tests (`-I tests.workers.held_task`), never by the
tests themselves (tests.workers.held)."""

from __future__ import annotations

import time
from typing import NoReturn

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from core.results import TaskResult
from tests.workers.held import HELD_IN_TRANSACTION, HELD_WITH_ROW_LOCKED
from workers.base import NoArgs, ProgressReporter, own_transactions_task, task


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
