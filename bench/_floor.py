"""A task with an empty body through matchops' task base: what the base alone costs per
task (its delivery counted and its outcome recorded in PostgreSQL, in a session of its
own), the floor of every contract task. Loaded only by bench workers (`-I bench._floor`).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.results import TaskResult
from workers.base import TaskArgs, task

NAME = "bench.floor"


class FloorArgs(TaskArgs):
    """Which task of the run it is."""

    index: int


class FloorResult(TaskResult):
    """The index it was given."""

    index: int


@task(NAME, args=FloorArgs, result=FloorResult)
def floor(session: Session, args: FloorArgs) -> FloorResult:
    """Nothing but the task base: its delivery count, a session, its recorded outcome."""
    return {"index": args.index}
