"""The one task base: retry policy, args validation, outcome recording, time limits.

Tasks are declared with `@task(...)` (one transaction, the usual case) or
`@own_transactions_task(...)` (work that opens its own transactions: long work committed in
bounded chunks, which reports progress, or a sweep spread over several connections).
Both register the task's args model, which the API uses for validation and for the
JSON schema of `GET /v1/tasks`, and its result shape, whose JSON schema the API
publishes beside it. The declaration also carries the task's rules (`workers.specs`):
its queue, its beat tick and the query that says whether a tick would find work, and
the work a commit makes due that it serves.

Args are pydantic models (`TaskArgs`): they arrive as untrusted JSON and are parsed
into values. Results are TypedDicts (`core.results.TaskResult`), checked and
published through pydantic's `TypeAdapter`: the domain returns plain dicts, which are
exactly what the ledger and the result backend store as JSON, so a TypedDict gives
mypy the shape while every task returns the very value it returned before, with no
model to build and dump on the way out. Results are not validated at run time, which
would cost every task a pass over its result; the tests check every task's actual
result against its shape.

Exactly once per task id (core.task_store, step 4): every delivery is counted first; the
outcome (result or domain error) is written only where none stands: in the same
transaction as the effects for `task` (a delivery that finds another's outcome there
rolls its effects back), and for `own_transactions_task`, which cannot roll back, after
the last of its own transactions while the task's `task_runs` row stays locked.
A later delivery of the id (a redelivery, a redispatch, a sibling sending the same id
twice) replays the recorded outcome and changes nothing; a delivery past
TASK_MAX_DELIVERIES ends the task as FAILURE ("gave up after N deliveries"), and a task
killed at its hard time limit ends as FAILURE (TimeLimitExceeded), recorded by the
worker's main process (`MatchopsTask.on_failure`).

No delivery waits long on another transaction's lock: every statement gives up after
DB_LOCK_TIMEOUT_MS, and the task is tried again after waits that grow to
DB_SILENT_CLIENT_SECONDS (`lock_retry_countdown`), by when the server has ended the
holder's transaction even if its host went silent. The worker process serves other
tasks meanwhile.

Time limits and the task log format (`task_name[task_id]` on every line) are
worker-wide, in celeryconfig.py.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from billiard.einfo import ExceptionInfo
from celery import Task
from celery.exceptions import TimeLimitExceeded
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from sqlalchemy import Select, text
from sqlalchemy.orm import Session

from celeryconfig import MATCHOPS_QUEUES
from core import task_store
from core.context import (
    CALLER_HEADER,
    RECORDED_CALLER_HEADER,
    REDISPATCH_HEADER,
    SENT_AT_HEADER,
    TaskContext,
    attach_context,
)
from core.db import get_bookkeeping_engine, get_engine, session_factory
from core.errors import (
    DomainError,
    GaveUp,
    MatchingError,
    PreviousFailure,
    describe_failure,
    rebuild_failure,
)
from core.followups import Due, Followup
from core.outages import TRANSIENT_ERRORS, waited_for_lock
from core.settings import get_settings
from core.task_store import TaskState
from core.values import unstorable_values
from workers.app import app
from workers.monitoring import announce_progress
from workers.specs import DEFAULT_QUEUE, Periodic, register
from workers.specs import TaskSpec as TaskSpec  # the API reads it from here

# Errors that are outcomes, not accidents: recorded, never retried, logged without a
# traceback (Celery logs `throws` at INFO).
FINAL_ERRORS: tuple[type[Exception], ...] = (DomainError, GaveUp, PreviousFailure)

# Who may name themselves in the caller header; anything else is a bare `send_task`.
SENT_BY = frozenset({"beat", "trigger"})

# How long the record of a task killed at its hard time limit waits for the task's row,
# which the killed process may hold until PostgreSQL sees its connection close.
TIME_LIMIT_RECORD_LOCK_WAIT = "30s"

logger = logging.getLogger("matchops.tasks")


class TaskArgs(BaseModel):
    """Base of every task's args model: unknown keys are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(TaskArgs):
    """No arguments."""


ArgsT = TypeVar("ArgsT", bound=TaskArgs)

# How a declaration runs its body for one delivery: (task, context, kwargs, first).
Call = Callable[[Task, TaskContext | None, dict[str, Any], "task_store.FirstDelivery | None"], Any]


@dataclass(frozen=True)
class Rules:
    """A task's rules, as its declaration states them (`task`'s keyword arguments)."""

    queue: str = DEFAULT_QUEUE
    periodic: Periodic | None = None
    work_waiting: Select[tuple[bool]] | None = None
    followup: Due | None = None
    followup_args: Mapping[str, Any] | None = None


class MatchopsTask(Task):  # type: ignore[misc]
    """Base class: jittered exponential backoff for outages, none for recorded outcomes."""

    autoretry_for = TRANSIENT_ERRORS
    dont_autoretry_for = FINAL_ERRORS
    throws = FINAL_ERRORS
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    # Below TASK_MAX_DELIVERIES (at least 8 by default): retries are deliveries too.
    max_retries = 5
    # Set on each task by its declaration.
    spec: TaskSpec

    def on_failure(
        self,
        exc: Exception,
        task_id: str,
        args: Any,
        kwargs: Any,
        einfo: ExceptionInfo | None,
    ) -> None:
        """A task killed at the hard time limit ends as a recorded FAILURE.

        Celery's main process calls this when the pool kills a task at TASK_TIME_LIMIT,
        and then acknowledges its message (`task_acks_on_timeout`): a task that ran out
        of time would run out again, so it is not delivered again. The outcome is written
        from a thread, because the killed process may still hold the task's row, and it
        is killed only once this returns.
        """
        if isinstance(exc, TimeLimitExceeded):
            threading.Thread(
                target=_record_time_limit,
                args=(task_id, self.name, kwargs or {}, exc),
                name=f"time-limit-{task_id}",
                daemon=True,
            ).start()


def parse_args(name: str, model: type[ArgsT], kwargs: dict[str, Any]) -> ArgsT:
    """Validate task kwargs; a bad argument is a MatchingError naming the field."""
    if problems := unstorable_values(kwargs):
        raise MatchingError(f"{name}: {'; '.join(problems)}")
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
    """Handed to tasks with their own transactions: reports progress where Flower and the
    API can see it."""

    def __init__(self, task: Task, context: TaskContext | None) -> None:
        self._task = task
        self.context = context

    def progress(self, done: int, total: int, **extra: Any) -> None:
        """Publish `{"progress": {"done", "total", ...}}` for the API and Flower."""
        if self.context is None:  # run eagerly, nobody to tell
            return
        progress = {"done": done, "total": total, **extra}
        with get_bookkeeping_engine().connect() as connection:
            task_store.record_progress(connection, self.context.task_id, progress)
        if not self._task.ignore_result:
            # A task declared to store no result leaves no key in the backend either.
            self._task.update_state(state=TaskState.STARTED, meta={"progress": progress})
        announce_progress(self._task, progress)


def task(
    name: str,
    *,
    args: type[ArgsT],
    result: Any,
    queue: str = DEFAULT_QUEUE,
    periodic: Periodic | None = None,
    work_waiting: Select[tuple[bool]] | None = None,
    followup: Due | None = None,
    followup_args: Mapping[str, Any] | None = None,
    **options: Any,
) -> Callable[[Callable[[Session, ArgsT], Any]], Task]:
    """Declare a task whose body runs in one transaction: `body(session, args) -> JSON`.

    `result` is the shape of what the body returns: a `TaskResult`, a list of one, or
    a union of them (any type pydantic's `TypeAdapter` reads). The task's rules:

    - `queue`: where its messages go (one of celeryconfig's MATCHOPS_QUEUES).
    - `periodic`: its beat tick, if it has one.
    - `work_waiting`: a query answering whether a tick would find anything to do; beat
      skips the tick when it answers false (`workers.beat`).
    - `followup`: the work a commit makes due (`core.followups.Due`) that this task
      serves; a commit that makes it due sends the task with `followup_args`.

    Celery's own task options (`ignore_result`, ...) go through `options`.
    """
    rules = Rules(queue, periodic, work_waiting, followup, followup_args)

    def decorate(body: Callable[[Session, ArgsT], Any]) -> Task:
        def call(
            task: Task,
            context: TaskContext | None,
            kwargs: dict[str, Any],
            first: task_store.FirstDelivery | None,
        ) -> Any:
            try:
                with session_factory().begin() as session:
                    attach_context(session, context)
                    parsed = parse_args(name, args, kwargs)
                    result = to_jsonable_python(body(session, parsed))
                    if context is not None:
                        success = task_store.Outcome(TaskState.SUCCESS, result)
                        _record_in(session, context, first, success)
            except task_store.Superseded as superseded:
                return _replay(superseded.outcome)
            return result

        return _declare(name, args, result, rules, body, call, options, counts_at_finish=True)

    return decorate


def own_transactions_task(
    name: str,
    *,
    args: type[ArgsT],
    result: Any,
    queue: str = DEFAULT_QUEUE,
    periodic: Periodic | None = None,
    work_waiting: Select[tuple[bool]] | None = None,
    followup: Due | None = None,
    followup_args: Mapping[str, Any] | None = None,
    **options: Any,
) -> Callable[[Callable[[ProgressReporter, ArgsT], Any]], Task]:
    """Declare a task that opens its own transactions: `body(reporter, args) -> JSON`.

    `result` is the shape of what the body returns, and the rules are, as for `task`.

    A guard transaction holds the task's row locked while the body runs, so a second
    delivery of the id waits and then replays the outcome. Its effects commit in the
    body's own transactions: a worker killed between the body's last commit and the
    outcome's runs the body again on the next delivery, which every such task
    takes in its stride (each batch, sweep or relay only does what is still to do).
    """

    rules = Rules(queue, periodic, work_waiting, followup, followup_args)

    def decorate(body: Callable[[ProgressReporter, ArgsT], Any]) -> Task:
        def call(
            task: Task,
            context: TaskContext | None,
            kwargs: dict[str, Any],
            first: task_store.FirstDelivery | None,
        ) -> Any:
            # Never a delivery counted at the end (`first` is None): the guard locks the
            # row before the body's own transactions commit anything.
            parsed = parse_args(name, args, kwargs)
            if context is None:
                return to_jsonable_python(body(ProgressReporter(task, None), parsed))
            with session_factory().begin() as guard:
                # Idle while the body works on other connections, up to the hard limit;
                # the server ends it a silent-client bound later, so the hard limit's
                # kill, and its recorded failure, always come first.
                settings = get_settings()
                idle = settings.task_time_limit + settings.db_silent_client_seconds
                if (recorded := task_store.claim_run(guard, context.task_id, idle)) is not None:
                    return _replay(recorded)
                result = to_jsonable_python(body(ProgressReporter(task, context), parsed))
                stood = task_store.record_outcome(
                    guard, context.task_id, task_store.Outcome(TaskState.SUCCESS, result)
                )
            return stood.result

        return _declare(name, args, result, rules, body, call, options)

    return decorate


def _declare(
    name: str,
    args: type[ArgsT],
    result: Any,
    rules: Rules,
    body: Callable[..., Any],
    call: Call,
    options: dict[str, Any],
    *,
    counts_at_finish: bool = False,
) -> Task:
    """Register the task's spec (args model, result shape, rules); create the Celery task
    around `call`. With `counts_at_finish`, a first delivery counts itself where it
    records its outcome (core.task_store, step 4d)."""
    if rules.queue not in MATCHOPS_QUEUES:
        raise ValueError(f"task {name!r}: queue {rules.queue!r} is not one of {MATCHOPS_QUEUES}")
    description = (body.__doc__ or name).strip().splitlines()[0]
    spec = TaskSpec(
        name=name,
        description=description,
        args_model=args,
        result_adapter=TypeAdapter(result),
        queue=rules.queue,
        periodic=rules.periodic,
        work_waiting=rules.work_waiting,
        serves=rules.followup,
        followup=None
        if rules.followup is None
        else Followup(name, tuple(sorted((rules.followup_args or {}).items()))),
    )

    def deliver(self: Task, request: Any, kwargs: dict[str, Any]) -> Any:
        sent_by = TaskContext(task_id=request.id, task_name=name, caller=_caller_of(request))
        due = _due_since(request)
        if counts_at_finish and _first_delivery(request):
            # The dispatcher names the caller the API recorded; the statement that
            # records the outcome checks it.
            caller = request.get(RECORDED_CALLER_HEADER) or sent_by.caller
            context = TaskContext(task_id=request.id, task_name=name, caller=caller)
            first = task_store.FirstDelivery(kwargs, sent_by.caller, due)
            try:
                return attempt(self, request, context, kwargs, first)
            except task_store.NotFirst:
                pass  # its work rolled back: it runs as a later delivery
        with get_bookkeeping_engine().connect() as connection:
            delivery = task_store.begin_delivery(connection, sent_by, kwargs, sent_by.caller, due)
        if delivery.outcome is not None:
            return _replay(delivery.outcome)
        # The recorded caller wins: the API's token subject for a task it accepted.
        context = TaskContext(task_id=request.id, task_name=name, caller=delivery.caller)
        limit = get_settings().task_max_deliveries
        if delivery.count > limit:
            return _give_up(context, delivery.count - 1)
        return attempt(self, request, context, kwargs, None)

    def attempt(
        self: Task,
        request: Any,
        context: TaskContext,
        kwargs: dict[str, Any],
        first: task_store.FirstDelivery | None,
    ) -> Any:
        try:
            return call(self, context, kwargs, first)
        except task_store.NotFirst:
            raise
        except DomainError as exc:
            # The body's transaction rolled back: record the refusal on its own, unless a
            # concurrent delivery recorded an outcome first (then that one stands).
            return _replay(_record_failure(context, exc, first))
        except TRANSIENT_ERRORS as exc:
            if first is not None and (stood := _count_quietly(context, first)) is not None:
                return _replay(stood)
            if request.retries < self.max_retries:  # Celery tries again
                _mark_quietly(context, TaskState.RETRY)
                raise
            if (stood := _record_failure_quietly(context, exc)) is not None:
                return _replay(stood)
            raise
        except Exception as exc:
            if first is not None and (stood := _count_quietly(context, first)) is not None:
                return _replay(stood)
            if (stood := _record_failure_quietly(context, exc)) is not None:
                return _replay(stood)
            raise

    def run(self: Task, **kwargs: Any) -> Any:
        request = self.request
        if request.id is None or request.is_eager:  # called directly: no ledger
            return call(self, None, kwargs, None)
        try:
            return deliver(self, request, kwargs)
        except TRANSIENT_ERRORS as exc:
            if waited_for_lock(exc) and request.retries < self.max_retries:
                # Another transaction held a lock past the lock timeout: try again once
                # it may be over rather than after Celery's quick first backoffs.
                countdown = lock_retry_countdown(
                    request.retries, self.max_retries, get_settings().db_silent_client_seconds
                )
                raise self.retry(exc=exc, countdown=countdown) from None
            raise

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
        spec=spec,
        **options,
    )(run)
    register(spec, created)
    return created


def lock_retry_countdown(retries: int, max_retries: int, silent_seconds: int) -> float:
    """Seconds before the next try of a task whose statement gave up on a lock.

    The waits double up to `silent_seconds` (DB_SILENT_CLIENT_SECONDS) before the last
    try, so together they outlast the longest a silent client's transaction can hold
    the lock, jitter included (at least 1.45 times it): a task queued behind a host
    that vanished still runs, once, after the server has cut that host off.
    """
    halvings = max(0, max_retries - 1 - retries)
    return silent_seconds * 0.5**halvings * random.uniform(0.75, 1.0)


def task_specs() -> dict[str, TaskSpec]:
    """The spec of every declared task, by name, read from the app's task registry."""
    return {name: task.spec for name, task in app.tasks.items() if isinstance(task, MatchopsTask)}


def _first_delivery(request: Any) -> bool:
    """Whether no delivery of this task can have run before: matchops published the
    message under a fresh id (a dispatcher's first publish of a task the API accepted,
    beat, a trigger), the broker delivers it for the first time (a message a worker died
    holding, or handed back, comes flagged as redelivered, by Redis' restore as by
    RabbitMQ), and it is neither a retry nor a dispatcher's redispatch of a task that
    went missing. A sibling's `send_task` may repeat an id, and a repeat should replay
    the outcome before any work, so its deliveries are counted first."""
    ours = request.get(RECORDED_CALLER_HEADER) is not None or _caller_of(request) in SENT_BY
    redelivered = (request.delivery_info or {}).get("redelivered")
    return ours and not redelivered and not request.retries and not request.get(REDISPATCH_HEADER)


def _record_in(
    session: Session,
    context: TaskContext,
    first: task_store.FirstDelivery | None,
    outcome: task_store.Outcome,
) -> None:
    """Record the outcome in the transaction of the task's work, counting a first
    delivery with it; `Superseded` or `NotFirst` when another outcome stands."""
    if first is None:
        task_store.record_first_outcome(session, context.task_id, outcome)
    else:
        task_store.finish_first_delivery(session, context, first, outcome)


def _caller_of(request: Any) -> str:
    sent_by = request.get(CALLER_HEADER)
    return sent_by if sent_by in SENT_BY else "send_task"


def _due_since(request: Any) -> datetime | None:
    """When the message was sent (its SENT_AT_HEADER) or, if later, its ETA; None when it
    says neither: a bare `send_task` without a countdown carries no send time (Celery's
    message protocol has none, and neither Redis nor AMQP messages add one)."""
    moments = []
    with contextlib.suppress(TypeError, ValueError, OverflowError, OSError):
        moments.append(datetime.fromtimestamp(float(request.get(SENT_AT_HEADER)), UTC))
    with contextlib.suppress(TypeError, ValueError):
        eta = datetime.fromisoformat(request.eta)
        moments.append(eta if eta.tzinfo else eta.replace(tzinfo=UTC))
    return max(moments, default=None)


def _replay(outcome: task_store.Outcome) -> Any:
    if outcome.state == TaskState.SUCCESS:
        return outcome.result
    raise rebuild_failure(outcome.error or {})


def _record_failure(
    context: TaskContext, error: BaseException, first: task_store.FirstDelivery | None = None
) -> task_store.Outcome:
    failure = task_store.Outcome(TaskState.FAILURE, error=describe_failure(error))
    with session_factory().begin() as session:
        if first is None:
            return task_store.record_outcome(session, context.task_id, failure)
        task_store.finish_first_delivery(session, context, first, failure)
    return failure


def _give_up(context: TaskContext, deliveries: int) -> Any:
    return _replay(_record_failure(context, GaveUp(f"gave up after {deliveries} deliveries")))


def _count_quietly(
    context: TaskContext, first: task_store.FirstDelivery
) -> task_store.Outcome | None:
    """Count a first delivery that failed before it could count itself (its work rolled
    back); the outcome another delivery recorded, if one did. The database may be what
    failed: then the delivery stays uncounted, as one killed mid-way."""
    sent_by = TaskContext(context.task_id, context.task_name, first.origin)
    with contextlib.suppress(*TRANSIENT_ERRORS), get_bookkeeping_engine().connect() as connection:
        return task_store.begin_delivery(
            connection, sent_by, first.args, first.origin, first.due
        ).outcome
    return None


def _record_failure_quietly(
    context: TaskContext, error: BaseException
) -> task_store.Outcome | None:
    """Record a bug's or a time limit's failure; the outcome another delivery of the task
    recorded first, if one did (it is the answer then), else None.

    The database may be what failed, so the original error is what propagates
    otherwise, recorded or not.
    """
    failure = task_store.Outcome(TaskState.FAILURE, error=describe_failure(error))
    with contextlib.suppress(*TRANSIENT_ERRORS), session_factory().begin() as session:
        try:
            task_store.record_first_outcome(session, context.task_id, failure)
        except task_store.Superseded as superseded:
            return superseded.outcome
    return None


def _record_time_limit(
    task_id: str, name: str, kwargs: dict[str, Any], exc: TimeLimitExceeded
) -> None:
    """Record `TimeLimitExceeded` as the outcome of a task killed at its hard limit,
    unless an outcome stands (a delivery that finished first keeps its own).

    A first delivery killed before it made the task's row (core.task_store, step 4d)
    makes it here, as sent by `send_task`: the killed process's message headers, which
    would name beat or a trigger, are not at hand in the main process."""
    seconds = exc.args[0] if exc.args else get_settings().task_time_limit
    # Built here: billiard's exception renders its arguments' repr as its message.
    error = {
        "type": TimeLimitExceeded.__name__,
        "message": f"killed at the hard time limit of {seconds} s (TASK_TIME_LIMIT)",
        "status": 500,
    }
    failure = task_store.Outcome(TaskState.FAILURE, error=error)
    try:
        with get_engine().begin() as connection:
            # Bounded: a killed task whose query still runs in PostgreSQL holds the row
            # until that query ends; the dispatcher then hands the task out again.
            connection.execute(text(f"SET LOCAL lock_timeout = '{TIME_LIMIT_RECORD_LOCK_WAIT}'"))
            context = TaskContext(task_id=task_id, task_name=name, caller="send_task")
            task_store.record_killed(connection, context, kwargs, failure)
    except TRANSIENT_ERRORS as outage:
        logger.warning(
            "%s[%s] hit its hard time limit; its failure could not be recorded (%s), so it "
            "is dispatched again after REDISPATCH_AFTER_SECONDS",
            name,
            task_id,
            outage,
        )


def _mark_quietly(context: TaskContext, state: TaskState) -> None:
    with contextlib.suppress(*TRANSIENT_ERRORS), get_bookkeeping_engine().connect() as connection:
        task_store.mark_state(connection, context.task_id, state)
