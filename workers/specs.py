"""What each task declares, and what is derived from all the declarations.

A task's rules live on its declaration (`@task(...)` / `@own_transactions_task(...)` in
`workers.base`): its queue, its beat tick, the query that says whether a tick would find
work, and the work a commit makes due that it serves. From the declared specs come the
queue routes (`celeryconfig`), the beat schedule (`beat_schedule.py`), the quiet
scheduler's checks (`workers.beat`) and the task each follow-up sends
(`workers.triggers`), so adding a periodic task touches only the module that declares it.

This module imports nothing of the Celery app: the app's configuration reads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter
from sqlalchemy import Select

from core.context import CALLER_HEADER
from core.followups import Due, Followup

# Every module that defines tasks. The app includes them (a worker imports them at
# start-up); its configuration, beat and the API import them too, as their declarations
# are what routes, schedules and lists the tasks.
TASK_MODULES = (
    "tasks.events",
    "tasks.maintenance",
    "tasks.mentorship",
    "tasks.carpool",
    "tasks.peer",
)
# Where a task goes unless its declaration names another queue.
DEFAULT_QUEUE = "interactive"


@dataclass(frozen=True)
class Periodic:
    """A beat tick of a task: entry `entry` of the schedule, sent every `every` seconds,
    expiring `expires` seconds after it is sent, before the next one, so a stopped fleet
    does not come back to a pile of ticks all due at once."""

    entry: str
    every: float
    expires: float

    def __post_init__(self) -> None:
        if not 0 < self.expires < self.every:
            raise ValueError(
                f"beat entry {self.entry!r}: expires ({self.expires}) must be above 0 and "
                f"below its interval ({self.every})"
            )


@dataclass(frozen=True)
class TaskSpec:
    """Everything a task declares besides its body."""

    name: str
    description: str
    args_model: type[BaseModel]
    # Built once at import, so a shape pydantic cannot read fails the import loudly.
    result_adapter: TypeAdapter[Any]
    queue: str = DEFAULT_QUEUE
    periodic: Periodic | None = None
    # Whether a beat tick of the task would find anything to do; None: always run it.
    work_waiting: Select[tuple[bool]] | None = None
    # The work a commit makes due that this task serves, and the follow-up it is sent as.
    serves: Due | None = None
    followup: Followup | None = None


_specs: dict[str, TaskSpec] = {}
# Each declared task by name: proxies until the app is finalized.
_tasks: dict[str, Any] = {}


def register(spec: TaskSpec, task: Any) -> None:
    """Record a declared task; a second declaration of a name or of a served `Due` is a
    mistake, refused at import."""
    if spec.name in _specs:
        raise RuntimeError(f"task {spec.name!r} is declared twice")
    if spec.serves is not None and (other := serving(spec.serves)) is not None:
        raise RuntimeError(f"tasks {other.name!r} and {spec.name!r} both serve {spec.serves}")
    _specs[spec.name] = spec
    _tasks[spec.name] = task


def declared() -> Mapping[str, TaskSpec]:
    """The spec of every task declared in this process so far, by name."""
    return _specs


def declared_task(name: str) -> Any:
    """The Celery task declared as `name` (KeyError when none is)."""
    return _tasks[name]


def serving(due: Due) -> TaskSpec | None:
    """The declared task that serves `due` work, if any."""
    return next((spec for spec in _specs.values() if spec.serves == due), None)


def queue_of(name: str) -> str:
    """The queue a task called `name` is published to."""
    spec = _specs.get(name)
    return DEFAULT_QUEUE if spec is None else spec.queue


def task_routes() -> list[tuple[str, dict[str, str]]]:
    """Celery's routes: each declared task to its queue."""
    return [(spec.name, {"queue": spec.queue}) for spec in _specs.values()]


def beat_schedule() -> dict[str, dict[str, Any]]:
    """Celery's beat schedule: one entry per declared tick, naming beat as its caller for
    the audit trail."""
    return {
        spec.periodic.entry: {
            "task": spec.name,
            "schedule": spec.periodic.every,
            "options": {"expires": spec.periodic.expires, "headers": {CALLER_HEADER: "beat"}},
        }
        for spec in _specs.values()
        if spec.periodic is not None
    }


def work_waiting_query(name: str) -> Select[tuple[bool]] | None:
    """The query that says whether a tick of `name` finds work; None: always run it."""
    spec = _specs.get(name)
    return None if spec is None else spec.work_waiting


def import_task_modules() -> None:
    """Import every task module, so that every task is declared; loud when one is still
    being imported (its declarations would be missing then)."""
    for name in TASK_MODULES:
        module = importlib.import_module(name)
        if getattr(module.__spec__, "_initializing", False):
            raise RuntimeError(
                f"the task declarations were read while {name} was being imported: "
                "read them only after the task modules are imported"
            )
