"""The routes: thin wrappers around `submission.service`, plus the health probes.

Database calls run in FastAPI's thread pool, so they never block the event loop; an
enqueue is recorded by the intake's asyncio connection (api.intake), a `wait` waits on
the loop (api.waiters), neither holds a thread, and the liveness probe runs on the loop
itself.
"""

from __future__ import annotations

import dataclasses
import email.message
import json
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from api.admission import Admission
from api.auth import (
    CurrentCaller,
    authenticate,
    bearer_scheme,
    may_read_every_task,
    require_scope,
)
from api.errors import ErrorBody, error_body, unavailable
from api.health import BrokerWatch, readiness
from api.intake import Intake
from api.schemas import (
    EnqueueRequest,
    Health,
    Readiness,
    TaskAccepted,
    TaskInfo,
    TaskStatus,
)
from api.waiters import OutcomeWaiters
from core import tracing
from core.outages import BROKER
from core.task_store import FINAL_STATES
from submission import service

router = APIRouter()
JSON = "application/json"


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "Missing, invalid or expired token.",
        403: "The task is outside the token's scope.",
        404: "Unknown task name or task id.",
        409: "The idempotency key was used before with another task or other args.",
        413: "The request body is over 64 KiB.",
        422: "The body or the task's args do not fit the schema; the message names the field.",
        429: (
            "The task's queue is behind (MAX_QUEUE_WAIT_SECONDS): nothing was enqueued; "
            "try again after the `Retry-After` header's seconds."
        ),
        503: "The database, broker or result backend is unreachable; nothing was enqueued.",
    }
    documented: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses
    }
    # Also keeps FastAPI from documenting its own 422 shape, which this API never sends.
    documented["4XX"] = {"model": ErrorBody, "description": "Every error has this shape."}
    return documented


async def enqueue(
    name: str,
    caller: CurrentCaller,
    request: Request,
    body: EnqueueRequest | None = None,
) -> Response:
    """Enqueue task `name` for the calling token.

    The answer is built here rather than through the response model: the shapes are
    fixed by `accepted_body`/`describe_task`, and validating them again would add work
    to every call of the front door's hottest path.
    """
    require_scope(caller, name)
    enqueue_request = body or EnqueueRequest()
    broker_watch: BrokerWatch = request.app.state.broker_watch
    if broker_watch.down:
        # The task would wait in PostgreSQL until the broker is back; say so instead.
        raise unavailable(BROKER)
    task = service.prepare_task(
        name,
        enqueue_request.args,
        caller=caller.sub,
        idempotency_key=enqueue_request.idempotency_key,
        countdown=enqueue_request.countdown,
        wait=enqueue_request.wait,
    )
    admission: Admission = request.app.state.admission
    if (overloaded := admission.refusal(name, due_now=not enqueue_request.countdown)) is not None:
        raise overloaded
    intake: Intake = request.app.state.intake
    with tracing.recording(name, task.task_id) as traceparent:
        if traceparent is not None:
            task = dataclasses.replace(task, traceparent=traceparent)
        task_id = await intake.record(task)
    if enqueue_request.wait is None:
        return JSONResponse(service.accepted_body(task_id, name), 202)
    waiters: OutcomeWaiters = request.app.state.waiters
    await waiters.wait(task_id, enqueue_request.wait)
    answer = await run_in_threadpool(
        partial(service.describe_task, task_id, reader=caller.sub, may_read_all=True)
    )
    return JSONResponse(answer, status_code=200 if answer["state"] in FINAL_STATES else 202)


class EnqueueRoute(APIRoute):
    """`enqueue` with its parameters resolved here instead of by FastAPI's dependency solver.

    The front door's hottest path, where FastAPI's generic solving of the token
    dependency and the body field is a large share of each enqueue's work. The answers
    stay FastAPI's, in its order: a body that is not JSON (422), the token (401), the
    body's fields (422), the same errors field for field
    (tests/api/test_enqueue_route.py); OpenAPI still documents the endpoint's signature.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The handler that calls `enqueue` with its resolved parameters."""

        async def handle(request: Request) -> Response:
            body = await _json_body(request)
            caller = await authenticate(request, await bearer_scheme(request))
            return await enqueue(request.path_params["name"], caller, request, _enqueue_body(body))

        return handle


async def _json_body(request: Request) -> Any:
    # As FastAPI reads a JSON body: no body is None; a body without a JSON content type
    # stays bytes, which validation refuses (a strict content type).
    raw = await request.body()
    if not raw:
        return None
    content_type = request.headers.get("content-type")
    if content_type is None or not _is_json(content_type):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise RequestValidationError([error], body=exc.doc) from exc
    except ValueError as exc:  # not UTF-8, UTF-16 or UTF-32
        raise HTTPException(400, "There was an error parsing the body") from exc


def _is_json(content_type: str) -> bool:
    if content_type == JSON:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


_ENQUEUE_REQUEST = TypeAdapter(EnqueueRequest)


def _enqueue_body(body: Any) -> EnqueueRequest | None:
    if body is None:
        return None
    try:
        return _ENQUEUE_REQUEST.validate_python(body, from_attributes=True)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors, body=body) from None


router.add_api_route(
    "/v1/tasks/{name}",
    enqueue,
    methods=["POST"],
    route_class_override=EnqueueRoute,
    status_code=202,
    response_model=TaskAccepted | TaskStatus,
    response_model_exclude_unset=True,
    responses={
        200: {"model": TaskStatus, "description": "With `wait`: the task finished in time."},
        **_errors(401, 403, 404, 409, 413, 422, 429, 503),
    },
    summary="Enqueue a task",
    description=(
        "Validates `args` against the task's schema (see `GET /v1/tasks`) and records the "
        "task in PostgreSQL: 202 with the task id and `status_url` means it is committed "
        "and will run, even if the broker loses its message or a worker dies.\n\n"
        "With `wait` (seconds, at most 30) the call blocks until the task finishes or the "
        "time runs out and answers as `GET /v1/tasks/{task_id}` would: **200** when the "
        "task is final (SUCCESS or FAILURE), **202** while it is still running.\n\n"
        "With `idempotency_key`, repeating the same task and args returns the first "
        "call's task id and enqueues nothing."
    ),
    tags=["tasks"],
)


@router.get(
    "/v1/tasks/{task_id}",
    response_model=TaskStatus,
    response_model_exclude_unset=True,
    responses=_errors(401, 404, 503),
    summary="A task's state, result or error",
    description=(
        "`error.status` is the HTTP status of the domain error that failed the task "
        "(MatchingError 400, Forbidden 403, NotFound 404, Conflict 409; 500 otherwise). "
        "A caller reads the tasks it enqueued; any other task (another caller's, one sent "
        "with `send_task` or by beat) only when its scope covers `tasks:read`, and is "
        "answered 404, as if unknown, otherwise."
    ),
    tags=["tasks"],
)
def task_status(task_id: str, caller: CurrentCaller) -> dict[str, Any]:
    """The status of one task."""
    return service.describe_task(
        task_id, reader=caller.sub, may_read_all=may_read_every_task(caller)
    )


@router.get(
    "/v1/tasks",
    response_model=list[TaskInfo],
    responses=_errors(401),
    dependencies=[Depends(authenticate)],
    summary="The enqueueable tasks",
    tags=["tasks"],
)
def get_tasks() -> list[dict[str, Any]]:
    """Every task: name, one-line description and the JSON schemas of its args and result."""
    return service.list_tasks()


# Served on the event loop: no thread-pool slot to wait for, however busy the API is.
@router.get("/healthz", response_model=Health, tags=["probes"], summary="Liveness")
async def healthz() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": ErrorBody, "description": "A dependency is down (named)."}},
    tags=["probes"],
    summary="Readiness",
)
def readyz() -> Any:
    """200 when PostgreSQL and the broker answer and none of this process's supervised
    background loops (the broker watch, the intake writer) waits to restart, else 503
    naming which is down. Loops of other processes (a worker's dispatcher or event
    flusher) that wait to restart are named under `elsewhere`."""
    checks, elsewhere = readiness()
    down = [name for name, answer in checks.items() if answer != "ok"]
    if not down:
        return {"status": "ready", "checks": checks, "elsewhere": elsewhere}
    message = "not ready: " + ", ".join(f"{name} {checks[name]}" for name in down)
    return JSONResponse(
        {**error_body("unavailable", message), "checks": checks, "elsewhere": elsewhere},
        status_code=503,
    )
