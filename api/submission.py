"""Enqueueing tasks and reading their status, shared by the HTTP routes and the CLI.

Both functions answer with exactly the JSON body the API sends and raise `ApiError`
for every refusal, so `matchops enqueue`/`status` and the HTTP API behave alike.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from celery.backends.redis import RedisBackend
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.errors import (
    BROKER_ERRORS,
    DATABASE_ERRORS,
    RESULT_BACKEND_ERRORS,
    ApiError,
    describe_field_errors,
    unavailable,
)
from api.schemas import FINAL_STATES, MAX_WAIT_SECONDS
from core.db import session_factory
from core.errors import DomainError, status_of
from core.settings import get_settings
from models.platform import EnqueuedTask
from workers.app import app, load_tasks
from workers.base import REGISTRY, TaskSpec

logger = logging.getLogger("api")

# A refused broker connection should become a 503 within a second, not after
# Celery's default publish retries.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}

# How a Celery state reads to a caller. RECEIVED is still waiting for a worker slot;
# a revoked or rejected task will not run, which the caller needs to see as a failure.
PUBLIC_STATES = {
    "PENDING": "PENDING",
    "RECEIVED": "PENDING",
    "STARTED": "STARTED",
    "RETRY": "RETRY",
    "SUCCESS": "SUCCESS",
    "FAILURE": "FAILURE",
    "REVOKED": "FAILURE",
    "REJECTED": "FAILURE",
}
FAILED_STATES = frozenset({"FAILURE", "REVOKED", "REJECTED"})
MAX_ERROR_MESSAGE = 500


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
    idempotency_key: str | None = None,
    countdown: float | None = None,
    wait: float | None = None,
) -> dict[str, Any]:
    """Validate and enqueue task `name` for `caller`; the body of `POST /v1/tasks/{name}`.

    Without `wait`: `{"task_id", "name", "state": "PENDING", "status_url"}`. With `wait`
    seconds: the status as `describe_task` gives it, once final or when `wait` ran out.
    A known `idempotency_key` returns the task it first enqueued and enqueues nothing.
    """
    spec = _task_spec(name)
    _check_timing(countdown, wait)
    task_id = _record_and_publish(spec, args, caller, idempotency_key, countdown)
    if wait is None:
        return accepted_body(task_id, name)
    return _wait_for(task_id, name, wait)


def describe_task(task_id: str) -> dict[str, Any]:
    """The body of `GET /v1/tasks/{task_id}`; 404 for an id no one enqueued.

    An id is known when the API recorded it, or when the result backend holds a
    state for it (a task a sibling service sent directly and a worker has picked up).
    """
    canonical = _canonical_task_id(task_id)
    with _reaching("database", DATABASE_ERRORS), session_factory().begin() as session:
        recorded_name = session.scalar(
            select(EnqueuedTask.name).where(EnqueuedTask.task_id == uuid.UUID(canonical))
        )
    meta = _task_meta(canonical)
    if recorded_name is None and meta.get("status", "PENDING") == "PENDING":
        raise ApiError(404, "not_found", f"unknown task id {task_id!r}")
    name = recorded_name or str(meta.get("name") or "")
    return status_body(canonical, name, meta)


def accepted_body(task_id: str, name: str) -> dict[str, Any]:
    """The 202 answer to an enqueue."""
    return {
        "task_id": task_id,
        "name": name,
        "state": "PENDING",
        "status_url": f"/v1/tasks/{task_id}",
    }


def status_body(task_id: str, name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A task's public status from its result-backend meta."""
    raw_state = str(meta.get("status", "PENDING"))
    # Custom states are only ever set by running tasks.
    state = PUBLIC_STATES.get(raw_state, "STARTED")
    body: dict[str, Any] = {"task_id": task_id, "name": name, "state": state}
    outcome = meta.get("result")
    if raw_state == "SUCCESS":
        body["result"] = outcome
    elif raw_state in FAILED_STATES:
        body["error"] = task_error(outcome)
    elif isinstance(outcome, dict) and isinstance(outcome.get("progress"), dict):
        body["progress"] = outcome["progress"]
    return body


def task_error(raised: object) -> dict[str, Any]:
    """`{"type", "message", "status"}` of a failed task, without any traceback.

    Domain errors keep their HTTP status; anything else is a 500.
    """
    if isinstance(raised, BaseException):
        type_name, message = type(raised).__name__, str(raised)
    elif isinstance(raised, dict):  # an exception Celery could not rebuild
        type_name = str(raised.get("exc_type") or "TaskFailed")
        message = str(raised.get("exc_message") or "")
    else:
        type_name, message = "TaskFailed", str(raised or "")
    status = raised.status if isinstance(raised, DomainError) else status_of(type_name) or 500
    first_line = message.strip().splitlines()[0] if message.strip() else ""
    return {
        "type": type_name,
        "message": first_line[:MAX_ERROR_MESSAGE] or f"{type_name} (details in the worker log)",
        "status": status,
    }


def _task_spec(name: str) -> TaskSpec:
    spec = task_catalogue().get(name)
    if spec is None:
        raise ApiError(404, "not_found", f"unknown task {name!r}; GET /v1/tasks lists the tasks")
    return spec


def _check_timing(countdown: float | None, wait: float | None) -> None:
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


def _validate_args(spec: TaskSpec, args: dict[str, Any]) -> None:
    # The same model the worker validates with, so a message that is accepted here runs.
    try:
        spec.args_model.model_validate(args)
    except ValidationError as exc:
        message = describe_field_errors(exc.errors(), prefix=("args",))
        raise ApiError(422, "validation_error", message) from None


def _task_id_for_key(
    session: Session, caller: str, key: str, name: str, args: dict[str, Any]
) -> str | None:
    """The task an earlier call with this key enqueued; 409 if that call asked for another."""
    row = session.execute(
        select(
            EnqueuedTask.task_id,
            EnqueuedTask.name,
            # Compared as jsonb: key order does not matter, `true` and `1` differ.
            (EnqueuedTask.args == args).label("same_args"),
        ).where(EnqueuedTask.caller == caller, EnqueuedTask.idempotency_key == key)
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


def _record_and_publish(
    spec: TaskSpec, args: dict[str, Any], caller: str, key: str | None, countdown: float | None
) -> str:
    """Insert the record, publish, commit: a failed publish leaves no record behind.

    A known key returns the task it first enqueued, before the args are validated
    (a repeat of an accepted call is answered the same; a conflicting one is a 409).
    A concurrent call with the same key blocks on the unique index until this
    transaction ends, then finds the row and returns its task id instead.
    """
    name = spec.name
    task_id = uuid.uuid4()
    published = False
    try:
        with session_factory().begin() as session:
            if key is not None and (known := _task_id_for_key(session, caller, key, name, args)):
                return known
            _validate_args(spec, args)
            statement = insert(EnqueuedTask).values(
                task_id=task_id, name=name, args=args, caller=caller, idempotency_key=key
            )
            if key is not None:
                statement = statement.on_conflict_do_nothing(constraint="uq_enqueued_tasks_key")
            inserted = session.scalar(statement.returning(EnqueuedTask.task_id))
            if inserted is None:
                assert key is not None
                reused = _task_id_for_key(session, caller, key, name, args)
                assert reused is not None
                return reused
            _publish(name, args, str(task_id), countdown)
            published = True
    except DATABASE_ERRORS as exc:
        logger.warning("database unreachable while enqueueing %s: %s", name, exc)
        if published:
            _withdraw(str(task_id))
        raise unavailable("database") from None
    return str(task_id)


def _publish(name: str, args: dict[str, Any], task_id: str, countdown: float | None) -> None:
    # Celery subscribes to the task's result channel while sending; against a dead
    # result backend that retries for many seconds, so ask it first.
    with _reaching(_result_backend_name(), RESULT_BACKEND_ERRORS):
        backend = app.backend
        if isinstance(backend, RedisBackend):
            backend.client.ping()
    with _reaching("broker", BROKER_ERRORS):
        app.send_task(
            name,
            kwargs=args,
            task_id=task_id,
            countdown=countdown,
            retry_policy=PUBLISH_RETRY_POLICY,
            # The caller reads this task's status, even of one that stores no result
            # when beat or a commit sends it.
            ignore_result=False,
        )


def _withdraw(task_id: str) -> None:
    # The message went out but its record did not commit; the caller is told nothing
    # was enqueued and will retry, so the first message must not run as well.
    try:
        app.control.revoke(task_id)
    except BROKER_ERRORS as exc:
        logger.error("could not revoke task %s after a failed commit: %s", task_id, exc)


def _wait_for(task_id: str, name: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    pause = 0.02
    while True:
        body = status_body(task_id, name, _task_meta(task_id))
        remaining = deadline - time.monotonic()
        if body["state"] in FINAL_STATES or remaining <= 0:
            return body
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.25)


def _task_meta(task_id: str) -> dict[str, Any]:
    with _reaching(_result_backend_name(), RESULT_BACKEND_ERRORS):
        meta: dict[str, Any] = app.backend.get_task_meta(task_id, cache=False)
    return meta


def _canonical_task_id(task_id: str) -> str:
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        raise ApiError(404, "not_found", f"unknown task id {task_id!r}") from None


def _result_backend_name() -> str:
    settings = get_settings()
    return "broker" if settings.backend == settings.broker else "result backend"


@contextmanager
def _reaching(component: str, errors: tuple[type[Exception], ...]) -> Iterator[None]:
    """Turn an outage of `component` into a 503 naming it (the cause is logged)."""
    try:
        yield
    except errors as exc:
        logger.warning("%s unreachable: %s", component, exc)
        raise unavailable(component) from None
