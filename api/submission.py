"""Recording tasks and reading their status, shared by the HTTP routes and the CLI.

Accepted means committed: a task is recorded in `task_runs` (`record_tasks_async`, many
at once for the API's intake; `record_tasks`, one for the CLI's `enqueue_task`), and only
then found by
the dispatchers of the workers and beat (core.dispatcher), woken by the commit. A task
whose publish never happens is published again, so nothing accepted is lost and
nothing is half-enqueued. Status is read from the same table.
Every refusal is an `ApiError`, so `matchops enqueue`/`status` and the HTTP API
answer alike.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from psycopg import sql
from pydantic import ValidationError
from sqlalchemy import Connection, select

from api.errors import ApiError, describe_field_errors, unavailable
from api.schemas import MAX_WAIT_SECONDS
from core.db import get_bookkeeping_engine, get_engine
from core.dispatch import DISPATCH_CHANNEL
from core.errors import describe_failure
from core.outages import DATABASE, DATABASE_ERRORS, RESULT_BACKEND, RESULT_BACKEND_ERRORS
from core.settings import get_settings
from core.values import unstorable_values
from models.platform import TaskProgress, TaskRun
from workers.app import app, load_tasks
from workers.base import TaskSpec, task_specs

logger = logging.getLogger("api")

# How a Celery state of a record older than the ledger reads to a caller.
LEGACY_STATES = {
    "PENDING": "PENDING",
    "RECEIVED": "PENDING",
    "STARTED": "STARTED",
    "RETRY": "RETRY",
    "SUCCESS": "SUCCESS",
    "FAILURE": "FAILURE",
    "REVOKED": "FAILURE",
    "REJECTED": "FAILURE",
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


@dataclass(frozen=True)
class NewTask:
    """A task to record: validated, or carrying the 422 it gets unless its key is known."""

    task_id: str
    name: str
    args: dict[str, Any]
    caller: str
    idempotency_key: str | None
    countdown: float | None
    problem: str | None = None
    # W3C traceparent of the span that records it (tracing on; core.tracing).
    traceparent: str | None = None


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
        raise ApiError(
            422, "validation_error", "idempotency_key: must not contain NUL characters (\\u0000)"
        )
    problem = _args_problem(spec, args)
    if problem is not None and idempotency_key is None:
        raise ApiError(422, "validation_error", problem)
    return NewTask(str(uuid.uuid4()), name, args, caller, idempotency_key, countdown, problem)


# The hot statement of the front door: every task of a batch in one round trip and one
# commit (one WAL flush for them all), the batch as one JSON array so the statement text,
# and its plan, stay the same whatever the batch size (and one parameter costs the
# driver less than six arrays of them). The notification wakes the
# dispatchers (core.dispatcher) when the commit makes the rows visible, not before.
# Both statements are psycopg's own SQL: the API's intake sends them on an asyncio
# connection, `record_tasks` through SQLAlchemy's driver-level execute. The channel name
# goes in as a quoted literal, composed once.
INSERT_TASKS = (
    sql.SQL("""
    INSERT INTO task_runs (
        task_id, name, args, caller, origin, idempotency_key, state, due_at, traceparent
    )
    SELECT t.task_id, t.name, t.args, t.caller, 'api', t.idempotency_key,
           'PENDING', now() + make_interval(secs => t.countdown), t.traceparent
    FROM jsonb_to_recordset(CAST(%(tasks)s AS jsonb)) AS t(
        task_id text, name text, args jsonb, caller text, idempotency_key text, countdown float8,
        traceparent text
    )
    ON CONFLICT (caller, idempotency_key) DO NOTHING
    RETURNING task_id, pg_notify({channel}, '')
""")
    .format(channel=sql.Literal(DISPATCH_CHANNEL))
    .as_string(None)
)

# The tasks earlier calls with the same keys recorded, for every task of a batch the
# insert skipped, in one round trip. Args are compared as jsonb: key order does not
# matter, `true` and `1` differ.
TASKS_FOR_KEYS = """
    SELECT k.task_id, r.task_id, r.name, r.args = k.args AS same_args
    FROM jsonb_to_recordset(CAST(%(keys)s AS jsonb)) AS k(
        task_id text, caller text, idempotency_key text, args jsonb
    )
    JOIN task_runs r ON r.caller = k.caller AND r.idempotency_key = k.idempotency_key
"""


def record_tasks(connection: Connection, tasks: Sequence[NewTask]) -> list[str | ApiError]:
    """Record the tasks (autocommit: one statement, one commit); per task, in order, the
    task id the caller gets (its own, or the one its idempotency key recorded first) or
    the refusal (409 for a key used with other args, 422 for args that do not fit)."""
    inserted: set[str] = set()
    if insert := insertion(tasks):
        inserted = {str(row[0]) for row in connection.exec_driver_sql(INSERT_TASKS, insert)}
    found: list[Any] = []
    if lookup := key_lookup(tasks, inserted):
        found = list(connection.exec_driver_sql(TASKS_FOR_KEYS, lookup))
    return answers(tasks, inserted, found)


async def record_tasks_async(
    connection: psycopg.AsyncConnection[Any], tasks: Sequence[NewTask]
) -> list[str | ApiError]:
    """`record_tasks` on an asyncio connection in autocommit (the API's intake)."""
    inserted: set[str] = set()
    if insert := insertion(tasks):
        cursor = await connection.execute(INSERT_TASKS, insert)
        inserted = {str(row[0]) for row in await cursor.fetchall()}
    found: list[Any] = []
    if lookup := key_lookup(tasks, inserted):
        found = await (await connection.execute(TASKS_FOR_KEYS, lookup)).fetchall()
    return answers(tasks, inserted, found)


def insertion(tasks: Sequence[NewTask]) -> dict[str, str] | None:
    """The parameter of INSERT_TASKS for the tasks whose args fit: one JSON array of
    them; None when there are none."""
    rows = [
        {
            "task_id": task.task_id,
            "name": task.name,
            "args": task.args,
            "caller": task.caller,
            "idempotency_key": task.idempotency_key,
            "countdown": task.countdown or 0.0,
            "traceparent": task.traceparent,
        }
        for task in tasks
        if task.problem is None
    ]
    return {"tasks": json.dumps(rows)} if rows else None


def key_lookup(tasks: Sequence[NewTask], inserted: set[str]) -> dict[str, str] | None:
    """The parameter of TASKS_FOR_KEYS for the tasks INSERT_TASKS did not insert (their
    key was used before, or earlier in the batch); None when it inserted them all."""
    rows = []
    for task in tasks:
        if task.task_id in inserted:
            continue
        assert task.idempotency_key is not None
        # Args PostgreSQL cannot hold were never recorded, so they equal nothing
        # recorded; compared as NULL, they cannot fail the statement either.
        storable = not unstorable_values(task.args)
        rows.append(
            {
                "task_id": task.task_id,
                "caller": task.caller,
                "idempotency_key": task.idempotency_key,
                "args": task.args if storable else None,
            }
        )
    return {"keys": json.dumps(rows)} if rows else None


def answers(
    tasks: Sequence[NewTask], inserted: set[str], found: Sequence[Any]
) -> list[str | ApiError]:
    """Per task, in order: its own id when inserted, else what its key's first call
    recorded (`found`: rows of TASKS_FOR_KEYS)."""
    earlier = {str(row[0]): tuple(row[1:]) for row in found}
    return [
        task.task_id
        if task.task_id in inserted
        else answer_for_key(task, earlier.get(task.task_id))
        for task in tasks
    ]


def answer_for_key(task: NewTask, row: tuple[Any, ...] | None) -> str | ApiError:
    """What a call whose key was known gets: the first call's task id, 409 when that
    call asked for another task or other args, 422 when nothing was recorded under the
    key and the args do not fit."""
    if row is None:  # only a task whose args did not fit gets here
        return ApiError(422, "validation_error", task.problem or "invalid args")
    task_id, name, same_args = row
    if name != task.name or not same_args:
        return ApiError(
            409,
            "idempotency_conflict",
            f"idempotency key {task.idempotency_key!r} was already used for task "
            f"{task_id} ({name}) with other arguments; send a new key for a "
            "different request",
        )
    return str(task_id)


def enqueue_task(task: NewTask) -> dict[str, Any]:
    """Record one task on its own (the CLI's way); the 202 body."""
    with _reaching(DATABASE, DATABASE_ERRORS), accepting_connection() as connection:
        [answer] = record_tasks(connection, [task])
    if isinstance(answer, ApiError):
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
        raise ApiError(404, "not_found", f"unknown task id {task_id!r}")
    with _reaching(DATABASE, DATABASE_ERRORS), get_bookkeeping_engine().connect() as connection:
        row = connection.execute(
            select(
                TaskRun.name,
                TaskRun.caller,
                TaskRun.origin,
                TaskRun.state,
                TaskRun.result,
                TaskRun.error,
                TaskProgress.progress,
            )
            .outerjoin(TaskProgress, TaskProgress.task_id == TaskRun.task_id)
            .where(TaskRun.task_id == task_id)
        ).one_or_none()
    own = row is not None and row.origin == "api" and row.caller == reader
    if row is None or not (own or may_read_all):
        raise ApiError(404, "not_found", f"unknown task id {task_id!r}")
    if row.state is None:
        return _legacy_status(task_id, row.name)
    body: dict[str, Any] = {"task_id": task_id, "name": row.name, "state": row.state}
    if row.state == "SUCCESS":
        body["result"] = row.result
    elif row.state == "FAILURE":
        body["error"] = row.error
    elif row.progress is not None:
        body["progress"] = row.progress
    return body


def finished_among(task_ids: Collection[str]) -> set[str]:
    """Which of these tasks have an outcome (one indexed read for all of them)."""
    with get_bookkeeping_engine().connect() as connection:
        rows = connection.scalars(
            select(TaskRun.task_id).where(
                TaskRun.task_id.in_(list(task_ids)), TaskRun.finished_at.is_not(None)
            )
        )
        return set(rows)


def accepted_body(task_id: str, name: str) -> dict[str, Any]:
    """The 202 answer to an enqueue."""
    return {
        "task_id": task_id,
        "name": name,
        "state": "PENDING",
        "status_url": f"/v1/tasks/{task_id}",
    }


def check_timing(countdown: float | None, wait: float | None) -> None:
    """422 for a countdown or wait outside the limits (the CLI checks the same way)."""
    max_countdown = get_settings().max_countdown_seconds
    if countdown is not None and not (math.isfinite(countdown) and 0 <= countdown <= max_countdown):
        raise ApiError(
            422,
            "validation_error",
            f"countdown: must be between 0 and {max_countdown} seconds, got {countdown:g}",
        )
    if wait is not None and not (math.isfinite(wait) and 0 < wait <= MAX_WAIT_SECONDS):
        raise ApiError(
            422,
            "validation_error",
            f"wait: must be above 0 and at most {MAX_WAIT_SECONDS:g} seconds, got {wait:g}",
        )


def _task_spec(name: str) -> TaskSpec:
    spec = task_catalogue().get(name)
    if spec is None:
        raise ApiError(404, "not_found", f"unknown task {name!r}; GET /v1/tasks lists the tasks")
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
    raw_state = str(meta.get("status", "PENDING"))
    body: dict[str, Any] = {
        "task_id": task_id,
        "name": name,
        "state": LEGACY_STATES.get(raw_state, "STARTED"),
    }
    outcome = meta.get("result")
    if raw_state == "SUCCESS":
        body["result"] = outcome
    elif body["state"] == "FAILURE":
        # The backend rebuilds the stored exception (domain errors with their class).
        failed = outcome if isinstance(outcome, BaseException) else TaskFailed(str(outcome or ""))
        body["error"] = describe_failure(failed)
    return body


class TaskFailed(Exception):
    """A failure the result backend holds without an exception it could rebuild."""


@contextmanager
def _reaching(component: str, errors: tuple[type[Exception], ...]) -> Iterator[None]:
    """Turn an outage of `component` into a 503 naming it (the cause is logged)."""
    try:
        yield
    except errors as exc:
        logger.warning("%s unreachable: %s", component, exc)
        raise unavailable(component) from None
