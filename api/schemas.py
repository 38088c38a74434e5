"""Request and response bodies of the HTTP API (they make up the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from core.task_store import TaskState
from submission.service import MAX_WAIT_SECONDS

# The states a caller sees (Celery's rarer ones are folded into these), published inline
# in each body's schema as an enum of strings.
StateField = Literal[
    TaskState.PENDING, TaskState.STARTED, TaskState.RETRY, TaskState.SUCCESS, TaskState.FAILURE
]
assert set(get_args(StateField)) == set(TaskState), "StateField must list every TaskState"


class EnqueueRequest(BaseModel):
    """Body of `POST /v1/tasks/{name}`."""

    model_config = ConfigDict(extra="forbid")

    args: dict[str, Any] = Field(
        default_factory=dict,
        description="The task's keyword arguments; their schema is in `GET /v1/tasks`.",
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description=(
            "Repeating a call with the same key, task and args returns the first call's "
            "task_id without enqueueing again (keys are kept at least 24 hours). The same "
            "key with another task or other args is a 409."
        ),
    )
    # Strict: `true` is not a number of seconds. The bounds are documented here but
    # checked where the CLI's calls are checked too, so both give the same message.
    countdown: float | None = Field(
        None,
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"minimum": 0},
        description="Run no sooner than this many seconds from now (at most "
        "MAX_COUNTDOWN_SECONDS, 86400 by default). The task waits in PostgreSQL and is "
        "published once due, so a countdown never waits in the broker.",
    )
    wait: float | None = Field(
        None,
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"exclusiveMinimum": 0, "maximum": MAX_WAIT_SECONDS},
        description="Block up to this many seconds for the task to finish and answer as GET would.",
    )


class TaskAccepted(BaseModel):
    """The task was enqueued; poll `status_url` for its outcome."""

    task_id: str
    name: str
    state: Literal[TaskState.PENDING]
    status_url: str


class TaskError(BaseModel):
    """Why a task failed. `status` is the HTTP status of the domain error (500 otherwise)."""

    type: str = Field(examples=["MatchingError"])
    message: str
    status: int = Field(examples=[400])


class TaskStatus(BaseModel):
    """A task's state; `result` once it succeeded, `error` once it failed."""

    task_id: str
    name: str
    state: StateField
    result: Any = Field(None, description="The task's JSON result (state SUCCESS).")
    error: TaskError | None = Field(None, description="Present when state is FAILURE.")
    progress: dict[str, Any] | None = Field(
        None, description="`{done, total, ...}` while a long task reports progress (STARTED)."
    )


class TaskInfo(BaseModel):
    """One enqueueable task."""

    name: str
    description: str
    args_schema: dict[str, Any] = Field(description="JSON schema of the task's `args`.")
    result_schema: dict[str, Any] = Field(
        description="JSON schema of the task's `result` (state SUCCESS)."
    )


class Readiness(BaseModel):
    """What each dependency answered."""

    status: Literal["ready"]
    checks: dict[str, str]
    # Supervised loops of other processes (`{part}@{host}:{pid}`) waiting to restart.
    elsewhere: dict[str, str] = {}


class Health(BaseModel):
    """The process is up."""

    status: Literal["ok"]
