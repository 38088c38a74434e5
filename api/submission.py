"""Enqueueing tasks and reading their status, shared by the HTTP routes and the CLI.

Accepted means committed: `enqueue_task` records the task in `task_runs` with one
insert, and only then hands it to a publisher (the API's dispatcher thread, or the
CLI's own publish). A task whose publish never happens is published again by a
dispatcher (core.dispatch), so nothing accepted is lost and nothing is half-enqueued.
Status is read from the same table. Both functions raise `ApiError` for every refusal,
so `matchops enqueue`/`status` and the HTTP API behave alike.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import cache
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert

from api.errors import ApiError, describe_field_errors, unavailable
from api.schemas import MAX_WAIT_SECONDS
from core.dispatch import Dispatch
from core.errors import status_of
from core.outages import DATABASE, DATABASE_ERRORS, RESULT_BACKEND, RESULT_BACKEND_ERRORS
from core.settings import get_settings
from core.values import unstorable_values
from models.platform import TaskProgress, TaskRun
from workers.app import app, load_tasks
from workers.base import REGISTRY, TaskSpec, autocommit_engine

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
    return REGISTRY


def list_tasks() -> list[dict[str, Any]]:
    """`GET /v1/tasks`: name, one-line description and args JSON schema of every task."""
    return [
        {
            "name": spec.name,
            "description": spec.description,
            "args_schema": spec.args_model.model_json_schema(),
        }
        for spec in sorted(task_catalogue().values(), key=lambda spec: spec.name)
    ]


def enqueue_task(
    name: str,
    args: dict[str, Any],
    *,
    caller: str,
    dispatch: Callable[[Dispatch], None],
    idempotency_key: str | None = None,
    countdown: float | None = None,
    wait: float | None = None,
) -> dict[str, Any]:
    """Validate task `name`, record it for `caller` and hand it to `dispatch`.

    Answers `{"task_id", "name", "state": "PENDING", "status_url"}` (the 202 body);
    `wait` is only checked here, the caller does the waiting. A known
    `idempotency_key` returns the task it first recorded and dispatches nothing.
    A countdown leaves the task waiting in PostgreSQL until a dispatcher finds it due.
    """
    spec = _task_spec(name)
    check_timing(countdown, wait)
    if idempotency_key is not None and "\x00" in idempotency_key:
        raise ApiError(
            422, "validation_error", "idempotency_key: must not contain NUL characters (\\u0000)"
        )
    with _reaching(DATABASE, DATABASE_ERRORS), autocommit_engine().connect() as connection:
        problem = _args_problem(spec, args)
        if problem is not None:
            # A repeat of an accepted call is answered the same even if it would not
            # validate today; anything else is the 422.
            if idempotency_key is not None and (
                known := _task_for_key(connection, caller, idempotency_key, name, args)
            ):
                return accepted_body(known, name)
            raise ApiError(422, "validation_error", problem)
        task_id = uuid.uuid4()
        due = func.now() + timedelta(seconds=countdown or 0)
        inserted = connection.scalar(
            insert(TaskRun)
            .values(
                task_id=task_id,
                name=name,
                args=args,
                caller=caller,
                origin="api",
                idempotency_key=idempotency_key,
                state="PENDING",
                due_at=due,
                # A countdown waits undispatched until a dispatcher finds it due.
                dispatched_at=None if countdown else func.now(),
            )
            .on_conflict_do_nothing(index_elements=[TaskRun.caller, TaskRun.idempotency_key])
            .returning(TaskRun.task_id)
        )
        if inserted is None:
            assert idempotency_key is not None  # only the key can conflict
            known = _task_for_key(connection, caller, idempotency_key, name, args)
            assert known is not None
            return accepted_body(known, name)
    if not countdown:
        dispatch(Dispatch(str(task_id), name, args))
    return accepted_body(str(task_id), name)


def describe_task(task_id: str, *, reader: str, may_read_all: bool) -> dict[str, Any]:
    """The body of `GET /v1/tasks/{task_id}` for `reader`.

    A reader sees the tasks it enqueued through the API; every other task (another
    caller's, one sent with `send_task` or by beat) only with `may_read_all`. Unknown
    ids and tasks the reader may not see are the same 404.
    """
    canonical = _canonical_task_id(task_id)
    with _reaching(DATABASE, DATABASE_ERRORS), autocommit_engine().connect() as connection:
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
            .where(TaskRun.task_id == canonical)
        ).one_or_none()
    own = row is not None and row.origin == "api" and row.caller == reader
    if row is None or not (own or may_read_all):
        raise ApiError(404, "not_found", f"unknown task id {task_id!r}")
    if row.state is None:
        return _legacy_status(str(canonical), row.name)
    body: dict[str, Any] = {"task_id": str(canonical), "name": row.name, "state": row.state}
    if row.state == "SUCCESS":
        body["result"] = row.result
    elif row.state == "FAILURE":
        body["error"] = row.error
    elif row.progress is not None:
        body["progress"] = row.progress
    return body


def finished_among(task_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these tasks have an outcome (one indexed read for all of them)."""
    with autocommit_engine().connect() as connection:
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


def _task_for_key(
    connection: Connection, caller: str, key: str, name: str, args: dict[str, Any]
) -> str | None:
    """The task an earlier call with this key recorded; 409 if that call asked for another."""
    row = connection.execute(
        select(
            TaskRun.task_id,
            TaskRun.name,
            # Compared as jsonb: key order does not matter, `true` and `1` differ.
            (TaskRun.args == args).label("same_args"),
        ).where(TaskRun.caller == caller, TaskRun.idempotency_key == key)
    ).one_or_none()
    if row is None:
        return None
    if row.name != name or not row.same_args:
        raise ApiError(
            409,
            "idempotency_conflict",
            f"idempotency key {key!r} was already used for task {row.task_id} ({row.name}) "
            "with other arguments; send a new key for a different request",
        )
    return str(row.task_id)


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
        type_name = type(outcome).__name__ if isinstance(outcome, BaseException) else "TaskFailed"
        body["error"] = {
            "type": type_name,
            "message": str(outcome or "")[:500] or f"{type_name} (details in the worker log)",
            "status": status_of(type_name) or 500,
        }
    return body


def _canonical_task_id(task_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(task_id)
    except ValueError:
        raise ApiError(404, "not_found", f"unknown task id {task_id!r}") from None


@contextmanager
def _reaching(component: str, errors: tuple[type[Exception], ...]) -> Iterator[None]:
    """Turn an outage of `component` into a 503 naming it (the cause is logged)."""
    try:
        yield
    except errors as exc:
        logger.warning("%s unreachable: %s", component, exc)
        raise unavailable(component) from None
