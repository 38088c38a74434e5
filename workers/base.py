"""The one task base: retry policy, time limits, logging context, args validation.

Tasks are declared with `@task(...)` (one transaction, the usual case) or
`@batched_task(...)` (long work that commits in bounded chunks and reports progress).
Both register the task's args model, which the API uses for validation and for the
JSON schema of `GET /v1/tasks`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from celery import Task
from celery.utils.log import get_task_logger
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_jsonable_python
from sqlalchemy.orm import Session

from core.db import session_factory
from core.errors import DomainError, MatchingError
from workers.app import app

logger = get_task_logger(__name__)

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
    # Domain errors are expected outcomes: logged without a traceback.
    throws = (DomainError,)
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 8

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        request = self.request
        extra = {"task_name": self.name, "task_id": request.id, "retries": request.retries}
        try:
            result = super().__call__(*args, **kwargs)
        except DomainError as exc:
            logger.info("%s refused: %s (%s)", self.name, exc, type(exc).__name__, extra=extra)
            raise
        elapsed_ms = (time.monotonic() - started) * 1000
        logger.info("%s finished in %.1f ms", self.name, elapsed_ms, extra=extra)
        return result


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


class ProgressReporter:
    """Handed to batched tasks: reports progress where Flower and the API can see it."""

    def __init__(self, task: Task) -> None:
        self._task = task

    def progress(self, done: int, total: int, **extra: Any) -> None:
        """Publish `{"progress": {"done", "total", ...}}` as the task's STARTED meta."""
        if self._task.request.id is None:  # run eagerly, nobody to tell
            return
        meta = {"progress": {"done": done, "total": total, **extra}}
        self._task.update_state(state="STARTED", meta=meta)


def _register(name: str, args: type[TaskArgs], body: Callable[..., Any]) -> str:
    if name in REGISTRY:
        raise RuntimeError(f"task {name!r} is declared twice")
    doc = (body.__doc__ or name).strip().splitlines()[0]
    REGISTRY[name] = TaskSpec(name=name, description=doc, args_model=args)
    return body.__doc__ or doc


def task(
    name: str, *, args: type[ArgsT], idempotent: bool = True, **options: Any
) -> Callable[[Callable[[Session, ArgsT], Any]], Task]:
    """Declare a task whose body runs in one transaction: `body(session, args) -> JSON`."""

    def decorate(body: Callable[[Session, ArgsT], Any]) -> Task:
        def run(self: Task, **kwargs: Any) -> Any:
            parsed = parse_args(name, args, kwargs)
            with session_factory().begin() as session:
                return to_jsonable_python(body(session, parsed))

        run.__doc__ = _register(name, args, body)
        run.__name__ = body.__name__
        return _celery_task(name, run, idempotent, options)

    return decorate


def batched_task(
    name: str, *, args: type[ArgsT], idempotent: bool = True, **options: Any
) -> Callable[[Callable[[ProgressReporter, ArgsT], Any]], Task]:
    """Declare a task that commits in chunks: `body(reporter, args) -> JSON`."""

    def decorate(body: Callable[[ProgressReporter, ArgsT], Any]) -> Task:
        def run(self: Task, **kwargs: Any) -> Any:
            parsed = parse_args(name, args, kwargs)
            return to_jsonable_python(body(ProgressReporter(self), parsed))

        run.__doc__ = _register(name, args, body)
        run.__name__ = body.__name__
        return _celery_task(name, run, idempotent, options)

    return decorate


def _celery_task(
    name: str, run: Callable[..., Any], idempotent: bool, options: dict[str, Any]
) -> Task:
    # Only work that is safe to repeat is acknowledged after it finishes: a worker
    # killed mid-way then hands the message to another worker.
    created: Task = app.task(
        name=name,
        base=MatchopsTask,
        bind=True,
        acks_late=idempotent,
        reject_on_worker_lost=idempotent,
        **options,
    )(run)
    return created


logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
