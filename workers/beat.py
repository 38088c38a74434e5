"""Beat's scheduler: a safety tick is sent only when there is something for it to do.

The sweep, relay and expiry ticks exist to pick up what a lost commit trigger, or time
alone, left waiting. When nothing waits (no pending request, no open match, no
unpublished event) their tasks would run, find nothing and write a line in every
operator's task list, a few times a minute all day. One indexed EXISTS per tick on
beat's side decides instead: the one the task declares (`work_waiting=` on its
declaration, `workers.specs`). When the database cannot answer, the tick is sent: the
task itself then meets the outage and retries.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.beat import PersistentScheduler, ScheduleEntry
from sqlalchemy.exc import SQLAlchemyError

from core.db import get_engine
from workers.specs import work_waiting_query

log = logging.getLogger(__name__)


def work_waiting(task: str) -> bool:
    """Whether a periodic run of `task` would find anything to do (True when unsure): the
    task's declared `work_waiting` query answers; a task that declares none always runs."""
    question = work_waiting_query(task)
    if question is None:
        return True
    try:
        with get_engine().connect() as connection:
            return bool(connection.scalar(question))
    except SQLAlchemyError as exc:
        log.warning("beat could not ask the database whether %s has work: %s", task, exc)
        return True


class QuietScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's persistent scheduler, skipping a tick whose task has nothing to do."""

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        """Send the entry's task, unless it would find nothing waiting."""
        if not work_waiting(entry.task):
            log.debug("Scheduler: nothing waits for %s, tick skipped", entry.task)
            return
        super().apply_entry(entry, producer=producer)
