"""Recording tasks and reading their status, shared by the HTTP routes and the CLI.

Accepted means committed: a task is recorded in the task store (`record_tasks_async`,
many at once for the API's intake; `record_tasks`, one for the CLI's `enqueue_task`),
and only then found by the dispatchers of the workers and beat (core.dispatcher), woken
by the commit. A task whose publish never happens is published again, so nothing
accepted is lost and nothing is half-enqueued. Status is read from the same table.
Every refusal is one of the domain's typed errors (core.errors), which the HTTP API
(api.errors) and `matchops enqueue`/`status` (runtime.cli) answer alike.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import psycopg
from celery import states
from pydantic import ValidationError
from sqlalchemy import Connection

from core import task_store
from core.db import get_bookkeeping_engine, get_engine
from core.errors import (
    Conflict,
    DomainError,
    Invalid,
    NotFound,
    describe_failure,
    describe_field_errors,
    unreachable,
)
from core.outages import DATABASE, DATABASE_ERRORS, RESULT_BACKEND, RESULT_BACKEND_ERRORS
from core.settings import get_settings
from core.task_store import NewTask, TaskState
from core.values import unstorable_values
from workers.app import app, load_tasks
from workers.base import TaskSpec, task_specs

logger = logging.getLogger("api")
# The longest a caller may block for a task's outcome.
MAX_WAIT_SECONDS = 30.0

# How a Celery state of a record older than the ledger reads to a caller.
LEGACY_STATES = {
    **{state.value: state for state in TaskState},
    states.RECEIVED: TaskState.PENDING,
    states.REVOKED: TaskState.FAILURE,
    states.REJECTED: TaskState.FAILURE,
}


@cache
def task_catalogue() -> dict[str, TaskSpec]:
    """Every registered task by name (task modules are imported on first use)."""
    load_tasks()
    return task_specs()


def list_tasks() -> list[dict[str, Any]]:
    """`GET /v1/tasks`: name, one-line description, args and result JSON schemas of every task."""
    return [
        {
            "name": spec.name,
            "description": spec.description,
            "args_schema": spec.args_model.model_json_schema(),
            # Serialization mode: the schema of the JSON a caller reads back.
            "result_schema": spec.result_adapter.json_schema(mode="serialization"),
        }
        for spec in sorted(task_catalogue().values(), key=lambda spec: spec.name)
    ]


def prepare_task(
    name: str,
    args: dict[str, Any],
    *,
    caller: str,
    idempotency_key: str | None = None,
    countdown: float | None = None,
    wait: float | None = None,
) -> NewTask:
    """Check task `name` and its call without touching the database (404, 422).

    Args that do not fit the schema are a 422 at once, unless the call carries an
    idempotency key: a repeat of an accepted call is answered the same even if it
    would not validate today, so `record_tasks` decides once it has looked the key up.
    """
    spec = _task_spec(name)
    check_timing(countdown, wait)
    if idempotency_key is not None and "\x00" in idempotency_key:
        raise Invalid("idempotency_key: must not contain NUL characters (\\u0000)")
    problem = _args_problem(spec, args)
    if problem is not None and idempotency_key is None:
        raise Invalid(problem)
    return NewTask(str(uuid.uuid4()), name, args, caller, idempotency_key, countdown, problem)


def record_tasks(connection: Connection, tasks: Sequence[NewTask]) -> list[str | DomainError]:
    """Record the tasks (autocommit: one statement, one commit); per task, in order, the
    task id the caller gets (its own, or the one its idempotency key recorded first) or
    the refusal (409 for a key used with other args, 422 for args that do not fit)."""
    recorded = task_store.record_tasks(connection, tasks)
    return answers(tasks, recorded.inserted, recorded.found)


async def record_tasks_async(
    connection: psycopg.AsyncConnection[Any], tasks: Sequence[NewTask]
) -> list[str | DomainError]:
    """`record_tasks` on an asyncio connection in autocommit (the API's intake)."""
    recorded = await task_store.record_tasks_async(connection, tasks)
    return answers(tasks, recorded.inserted, recorded.found)


def answers(
    tasks: Sequence[NewTask], inserted: set[str], found: Sequence[Any]
) -> list[str | DomainError]:
    """Per task, in order: its own id when inserted, else what its key's first call
    recorded (`found`: rows of TASKS_FOR_KEYS)."""
    earlier = {str(row[0]): tuple(row[1:]) for row in found}
    return [
        task.task_id
        if task.task_id in inserted
        else answer_for_key(task, earlier.get(task.task_id))
        for task in tasks
    ]


def answer_for_key(task: NewTask, row: tuple[Any, ...] | None) -> str | DomainError:
    """What a call whose key was known gets: the first call's task id, 409 when that
    call asked for another task or other args, 422 when nothing was recorded under the
    key and the args do not fit."""
    if row is None:  # only a task whose args did not fit gets here
        return Invalid(task.problem or "invalid args")
    task_id, name, same_args = row
    if name != task.name or not same_args:
        return Conflict(
            f"idempotency key {task.idempotency_key!r} was already used for task "
            f"{task_id} ({name}) with other arguments; send a new key for a "
            "different request",
        )
    return str(task_id)


def enqueue_task(task: NewTask) -> dict[str, Any]:
    """Record one task on its own (the CLI's way); the 202 body."""
    with _reaching(DATABASE, DATABASE_ERRORS), accepting_connection() as connection:
        [answer] = record_tasks(connection, [task])
    if isinstance(answer, DomainError):
        raise answer
    return accepted_body(answer, task.name)


def accepting_connection() -> Connection:
    """An autocommit connection whose commits wait for the disk: a 202 must survive a
    database crash."""
    return get_engine().connect().execution_options(isolation_level="AUTOCOMMIT")


def describe_task(task_id: str, *, reader: str, may_read_all: bool) -> dict[str, Any]:
    """The body of `GET /v1/tasks/{task_id}` for `reader`.

    A reader sees the tasks it enqueued through the API; every other task (another
    caller's, one sent with `send_task` or by beat) only with `may_read_all`. Unknown
    ids and tasks the reader may not see are the same 404.
    """
    if "\x00" in task_id:  # no PostgreSQL text holds one, so no task has it
        raise NotFound(f"unknown task id {task_id!r}")
    with _reaching(DATABASE, DATABASE_ERRORS), get_bookkeeping_engine().connect() as connection:
        row = task_store.task_status(connection, task_id)
    own = row is not None and row.origin == "api" and row.caller == reader
    if row is None or not (own or may_read_all):
        raise NotFound(f"unknown task id {task_id!r}")
    if row.state is None:
        return _legacy_status(task_id, row.name)
    body: dict[str, Any] = {"task_id": task_id, "name": row.name, "state": row.state}
    if row.state == TaskState.SUCCESS:
        body["result"] = row.result
    elif row.state == TaskState.FAILURE:
        body["error"] = row.error
    elif row.progress is not None:
        body["progress"] = row.progress
    return body


def finished_among(task_ids: Collection[str]) -> set[str]:
    """Which of these tasks have an outcome (one indexed read for all of them)."""
    with get_bookkeeping_engine().connect() as connection:
        return task_store.finished_among(connection, task_ids)


def accepted_body(task_id: str, name: str) -> dict[str, Any]:
    """The 202 answer to an enqueue."""
    return {
        "task_id": task_id,
        "name": name,
        "state": TaskState.PENDING,
        "status_url": f"/v1/tasks/{task_id}",
    }


def check_timing(countdown: float | None, wait: float | None) -> None:
    """422 for a countdown or wait outside the limits (the CLI checks the same way)."""
    max_countdown = get_settings().max_countdown_seconds
    if countdown is not None and not (math.isfinite(countdown) and 0 <= countdown <= max_countdown):
        raise Invalid(
            f"countdown: must be between 0 and {max_countdown} seconds, got {countdown:g}",
        )
    if wait is not None and not (math.isfinite(wait) and 0 < wait <= MAX_WAIT_SECONDS):
        raise Invalid(
            f"wait: must be above 0 and at most {MAX_WAIT_SECONDS:g} seconds, got {wait:g}",
        )


def _task_spec(name: str) -> TaskSpec:
    spec = task_catalogue().get(name)
    if spec is None:
        raise NotFound(f"unknown task {name!r}; GET /v1/tasks lists the tasks")
    return spec


def _args_problem(spec: TaskSpec, args: dict[str, Any]) -> str | None:
    # The same checks the worker makes, so a task that is accepted here runs; values
    # PostgreSQL cannot store are named before they could fail the insert.
    if problems := unstorable_values(args, "args"):
        return "; ".join(problems)
    try:
        spec.args_model.model_validate(args)
    except ValidationError as exc:
        return describe_field_errors(exc.errors(), prefix=("args",))
    return None


def _legacy_status(task_id: str, name: str) -> dict[str, Any]:
    # Recorded before the ledger: its outcome lives in the result backend only.
    with _reaching(RESULT_BACKEND, RESULT_BACKEND_ERRORS):
        meta: dict[str, Any] = app.backend.get_task_meta(task_id, cache=False)
    raw_state = str(meta.get("status", states.PENDING))
    body: dict[str, Any] = {
        "task_id": task_id,
        "name": name,
        "state": LEGACY_STATES.get(raw_state, TaskState.STARTED),
    }
    outcome = meta.get("result")
    if raw_state == states.SUCCESS:
        body["result"] = outcome
    elif body["state"] == TaskState.FAILURE:
        # The backend rebuilds the stored exception (domain errors with their class).
        failed = outcome if isinstance(outcome, BaseException) else TaskFailed(str(outcome or ""))
        body["error"] = describe_failure(failed)
    return body


class TaskFailed(Exception):
    """A failure the result backend holds without an exception it could rebuild."""


@contextmanager
def _reaching(component: str, errors: tuple[type[Exception], ...]) -> Iterator[None]:
    """Turn an outage of `component` into `Unavailable` naming it (the cause is logged)."""
    try:
        yield
    except errors as exc:
        logger.warning("%s unreachable: %s", component, exc)
        raise unreachable(component) from None
