"""The one task base: retry policy and args validation for every task.

Time limits and the task log format (`task_name[task_id]` on every line) are worker-wide,
in celeryconfig.py.

Tasks are declared with `@task(...)` (one transaction, the usual case) or
`@batched_task(...)` (work that opens its own transactions: long work committed in
bounded chunks, which reports progress, or a sweep spread over several connections).
Both register the task's args model, which the API uses for validation and for the
JSON schema of `GET /v1/tasks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from celery import Task
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_jsonable_python
from sqlalchemy.orm import Session

from core.context import CALLER_HEADER, TASK_INFO_KEY, TaskContext
from core.db import session_factory
from core.errors import DomainError, MatchingError
from workers.app import app

# Outages and lock contention: worth another try after a pause. Deadlocks and
# serialization failures arrive as OperationalError too.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
)


class TaskArgs(BaseModel):
    """Base of every task's args model: unknown keys are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(TaskArgs):
    """No arguments."""


ArgsT = TypeVar("ArgsT", bound=TaskArgs)


@dataclass(frozen=True)
class TaskSpec:
    """What the API needs to know of an enqueueable task."""

    name: str
    description: str
    args_model: type[TaskArgs]


REGISTRY: dict[str, TaskSpec] = {}


class MatchopsTask(Task):  # type: ignore[misc]
    """Base class: jittered exponential backoff for transient errors, none for domain errors."""

    autoretry_for = TRANSIENT_ERRORS
    dont_autoretry_for = (DomainError,)
    # Domain errors are expected outcomes: Celery logs them at INFO without a traceback.
    throws = (DomainError,)
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 8


def parse_args(name: str, model: type[ArgsT], kwargs: dict[str, Any]) -> ArgsT:
    """Validate task kwargs; a bad argument is a MatchingError naming the field."""
    try:
        return model.model_validate(kwargs)
    except ValidationError as exc:
        raise MatchingError(f"{name}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: `field: why`."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "args"
        parts.append(f"{field}: {error['msg']}")
    return "; ".join(parts)


def context_of(task: Task) -> TaskContext:
    """The running task's id, name and caller, for the audit trail."""
    caller = task.request.get(CALLER_HEADER) or "send_task"
    return TaskContext(task.request.id or "", task.name, str(caller))


class ProgressReporter:
    """Handed to batched tasks: reports progress where Flower and the API can see it."""

    def __init__(self, task: Task) -> None:
        self._task = task

    @property
    def context(self) -> TaskContext:
        """The running task, for the transactions the batched body opens."""
        return context_of(self._task)

    def progress(self, done: int, total: int, **extra: Any) -> None:
        """Publish `{"progress": {"done", "total", ...}}` as the task's STARTED meta."""
        if self._task.request.id is None:  # run eagerly, nobody to tell
            return
        meta = {"progress": {"done": done, "total": total, **extra}}
        self._task.update_state(state="STARTED", meta=meta)


def task(
    name: str, *, args: type[ArgsT], **options: Any
) -> Callable[[Callable[[Session, ArgsT], Any]], Task]:
    """Declare a task whose body runs in one transaction: `body(session, args) -> JSON`."""

    def decorate(body: Callable[[Session, ArgsT], Any]) -> Task:
        def call(task: Task, parsed: ArgsT) -> Any:
            with session_factory().begin() as session:
                session.info[TASK_INFO_KEY] = context_of(task)
                return body(session, parsed)

        return _declare(name, args, body, call, options)

    return decorate


def batched_task(
    name: str, *, args: type[ArgsT], **options: Any
) -> Callable[[Callable[[ProgressReporter, ArgsT], Any]], Task]:
    """Declare a task that opens its own transactions: `body(reporter, args) -> JSON`."""

    def decorate(body: Callable[[ProgressReporter, ArgsT], Any]) -> Task:
        def call(task: Task, parsed: ArgsT) -> Any:
            return body(ProgressReporter(task), parsed)

        return _declare(name, args, body, call, options)

    return decorate


def _declare(
    name: str,
    args: type[ArgsT],
    body: Callable[..., Any],
    call: Callable[[Task, ArgsT], Any],
    options: dict[str, Any],
) -> Task:
    """Register the task's args model and create the Celery task around `call`."""
    if name in REGISTRY:
        raise RuntimeError(f"task {name!r} is declared twice")
    description = (body.__doc__ or name).strip().splitlines()[0]
    REGISTRY[name] = TaskSpec(name=name, description=description, args_model=args)

    def run(self: Task, **kwargs: Any) -> Any:
        return to_jsonable_python(call(self, parse_args(name, args, kwargs)))

    run.__doc__ = body.__doc__ or description
    run.__name__ = body.__name__
    # Every task is idempotent (the contract), so every message is acknowledged only
    # after the task finishes: a worker killed mid-way hands it to another worker.
    created: Task = app.task(
        name=name,
        base=MatchopsTask,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        **options,
    )(run)
    return created
