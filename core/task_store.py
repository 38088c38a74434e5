"""The task store: every statement on `task_runs`, `task_progress` and `task_run_totals`.

PostgreSQL holds every task the API accepted and every task a worker ran; the broker
only carries a message to a worker. One row of `task_runs` follows a task through its
life, and this module is the only one that reads or writes it:

1. **accepted** (`TaskState.PENDING`): `record_tasks` inserts the rows of a batch in one
   statement and one commit, due `countdown` seconds from now. The commit notifies
   `DISPATCH_CHANNEL`, waking the dispatchers (core.dispatcher) when the rows become
   visible, not before. A caller's idempotency key is unique per caller: a repeat
   inserts nothing and finds the task its first call recorded (`TASKS_FOR_KEYS`).
2. **due**: `due_at` has passed and no dispatcher has handed the task to the broker
   (`dispatched_at IS NULL`); `DISPATCH_LAG` shows how long the oldest has waited.
3. **dispatched**: a dispatcher claims due tasks and marks them dispatched in the same
   statement (`claim_fresh`), skipping rows another dispatcher holds, then publishes
   them (core.dispatch). A failed publish gives the claim back (`release`). A task with
   no outcome long after its last dispatch, that nobody is running, is claimed again
   (`claim_lost`): a message lost with the broker's data, a worker killed outright, a
   crash between commit and publish all end with the task run. The wait doubles with
   each redispatch, so a task that only sits in a long broker backlog is not copied
   into it again and again. Countdowns wait here too: the broker never holds a long ETA.
4. **started** (`STARTED`) / **retry** (`RETRY`): the task base (workers.base) keeps
   the ledger's protocol, so that every delivery of one task id after the first replays
   the first one's outcome and changes nothing:

   a. `begin_delivery` counts the delivery in its own committed statement (a worker
      killed mid-task must still have counted it, or a poison message would loop), and
      returns the outcome if one is recorded: a later delivery replays it and stops. A
      task the API never saw (`send_task`, beat) gets its row here;
   b. the work runs, and its transaction ends by recording the outcome only where none
      stands (`record_first_outcome`), so the outcome commits exactly when the effects
      do. Two deliveries of one id running at once (rare: a redelivery or a duplicate
      send while the first still runs) both reach that statement; the second waits
      there for the first's commit, finds its outcome, and rolls its own work back
      (`Superseded`). Checking at the end rather than locking the row first saves every
      task a round trip for the sake of that rare case;
   c. a task with its own transactions cannot roll its committed work back, so it locks
      the row first instead (`claim_run`), in a guard transaction held while it runs: a
      second delivery gives up there after the lock timeout and is tried again later,
      when it finds the outcome;
   d. a one-transaction task that matchops published under a fresh id (a dispatcher's
      first publish of a task the API accepted, beat, a trigger) and that the broker
      delivers for the first time (not redelivered, not a retry, not a redispatch)
      skips step a: it counts itself in the statement that records its outcome, in its
      work's transaction (`finish_first_delivery`), which saves the task a round trip
      and a commit of its own. Such a delivery killed mid-way leaves no count, but its
      message is then redelivered (flagged so by the broker) or redispatched, and that
      delivery counts first, so a message that keeps killing its worker is still
      stopped. One that finds the task finished, or recorded for another caller, rolls
      its work back (`NotFirst`) and runs again as a later delivery: counted first,
      replaying the outcome. A task killed at its hard limit before it made its row gets
      it with its failure (`record_killed`).

   A transient error shows `RETRY` until the next delivery (`mark_state`); a long task
   reports its progress beside the row (`record_progress`, `task_progress`).
5. **success** (`SUCCESS`) / **failure** (`FAILURE`): the outcome, written once
   (`finished_at` set); `task_status` reads it back for `GET /v1/tasks/{id}` and
   `matchops status`.
6. **pruned**: `maintenance.reconcile` deletes finished rows past
   `TASK_RUN_RETENTION_DAYS` (`prune_task_runs`) and folds what they counted into
   `task_run_totals`, so the failure and redispatch counters never go down.

Every statement a task or a dispatcher runs is built once, at import: SQLAlchemy then
only looks up its compiled form per execution instead of building and hashing a new
statement each time, which cost more than the database's own work on them. They run as
Core statements, on the session's connection where there is a session: they load no ORM
objects, and the ORM's execution path would cost as much again.

Every statement waits for a locked `task_runs` row at most the lock timeout
(core.db.session_options): a delivery that meets the row held by another, live or
silent, is retried later by the task base instead of holding its worker process.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    DateTime,
    Row,
    Select,
    bindparam,
    case,
    delete,
    func,
    literal,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.context import TaskContext
from core.errors import DOMAIN_ERRORS, GaveUp
from core.sql import HistogramQuery, epoch_seconds, seconds_before_now
from core.values import unstorable_values
from models.platform import TaskProgress, TaskRun, TaskRunTotal


class TaskState(StrEnum):
    """The state of a task, as `task_runs.state` holds it and a caller reads it."""

    # Accepted and not started yet: waiting for its countdown, a dispatcher or a worker.
    PENDING = "PENDING"
    # A worker is running it (or ran it and was killed before it recorded an outcome).
    STARTED = "STARTED"
    # Its last delivery met a transient error; it runs again after a backoff.
    RETRY = "RETRY"
    # Finished with a result, recorded once; every later delivery replays it.
    SUCCESS = "SUCCESS"
    # Finished with an error (a domain refusal, a bug, a time limit, or too many
    # deliveries), recorded once; every later delivery replays it.
    FAILURE = "FAILURE"


# The states of a task that has its outcome: nothing about it changes any more.
FINAL_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILURE})

# The table whose row follows a task through its life.
TASK_TABLE = TaskRun.__tablename__
# Committing new tasks notifies this channel; dispatchers LISTEN on it.
DISPATCH_CHANNEL = "matchops_dispatch"
# Idempotency keys must hold for at least 24 hours; a week keeps status lookups working.
TASK_RUN_RETENTION_DAYS = 7
# The most tasks one claim marks and returns.
CLAIM_BATCH = 500
# A redispatch waits twice as long as the one before, up to 2**6 times the first wait.
MAX_BACKOFF_DOUBLINGS = 6
# Seconds a task waits for a worker: well under a second when workers keep up.
TASK_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0)
TASK_WAIT_HISTOGRAM = HistogramQuery(TASK_WAIT_BUCKETS)

# Error types a failure keeps as its `error` label: the domain's refusals, the tasks that
# gave up, and the soft time limit; any other type (a bug, an outage that outlasted the
# retries) is summed under "_other", so a failing task cannot invent label values.
FAILURE_LABELS = (*DOMAIN_ERRORS, GaveUp.__name__, "SoftTimeLimitExceeded")
OTHER_ERROR = "_other"


def failure_label(error_type: ColumnElement[Any]) -> ColumnElement[str]:
    """The `error` label of a failure whose error type is `error_type`."""
    return case((error_type.in_(FAILURE_LABELS), error_type), else_=OTHER_ERROR)


# 1. Accepted ------------------------------------------------------------------------


@dataclass(frozen=True)
class NewTask:
    """A task to record: validated, or carrying the problem it is refused for unless
    its idempotency key is known."""

    task_id: str
    name: str
    args: dict[str, Any]
    caller: str
    idempotency_key: str | None
    countdown: float | None
    problem: str | None = None
    # W3C traceparent of the span that records it (tracing on; core.tracing).
    traceparent: str | None = None


# The hot statement of the front door: every task of a batch in one round trip and one
# commit (one WAL flush for them all), the batch as one JSON array so the statement text,
# and its plan, stay the same whatever the batch size (and one parameter costs the
# driver less than six arrays of them). Both statements are psycopg's own SQL: the API's
# intake sends them on an asyncio connection, `record_tasks` through SQLAlchemy's
# driver-level execute.
INSERT_TASKS = (
    sql.SQL(
        """
    INSERT INTO task_runs (
        task_id, name, args, caller, origin, idempotency_key, state, due_at, traceparent
    )
    SELECT t.task_id, t.name, t.args, t.caller, 'api', t.idempotency_key,
           {pending}, now() + make_interval(secs => t.countdown), t.traceparent
    FROM jsonb_to_recordset(CAST(%(tasks)s AS jsonb)) AS t(
        task_id text, name text, args jsonb, caller text, idempotency_key text, countdown float8,
        traceparent text
    )
    ON CONFLICT (caller, idempotency_key) DO NOTHING
    RETURNING task_id, pg_notify({channel}, '')
"""
    )
    .format(pending=sql.Literal(TaskState.PENDING.value), channel=sql.Literal(DISPATCH_CHANNEL))
    .as_string()
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


@dataclass(frozen=True)
class Recorded:
    """What `record_tasks` did: the ids it inserted, and for the tasks it skipped the
    first call of their key (`TASKS_FOR_KEYS` rows: own id, recorded id, name, same_args)."""

    inserted: set[str]
    found: Sequence[Any]


def record_tasks(connection: Connection, tasks: Sequence[NewTask]) -> Recorded:
    """Record the tasks whose args fit (autocommit: one statement, one commit), and look
    up the keys of those it did not insert, in at most two round trips."""
    inserted: set[str] = set()
    if parameters := _insertion(tasks):
        inserted = {str(row[0]) for row in connection.exec_driver_sql(INSERT_TASKS, parameters)}
    found: list[Any] = []
    if lookup := _key_lookup(tasks, inserted):
        found = list(connection.exec_driver_sql(TASKS_FOR_KEYS, lookup))
    return Recorded(inserted, found)


async def record_tasks_async(
    connection: psycopg.AsyncConnection[Any], tasks: Sequence[NewTask]
) -> Recorded:
    """`record_tasks` on an asyncio connection in autocommit (the API's intake)."""
    inserted: set[str] = set()
    if parameters := _insertion(tasks):
        cursor = await connection.execute(INSERT_TASKS, parameters)
        inserted = {str(row[0]) for row in await cursor.fetchall()}
    found: list[Any] = []
    if lookup := _key_lookup(tasks, inserted):
        found = await (await connection.execute(TASKS_FOR_KEYS, lookup)).fetchall()
    return Recorded(inserted, found)


def _insertion(tasks: Sequence[NewTask]) -> dict[str, str] | None:
    # The parameter of INSERT_TASKS for the tasks whose args fit: one JSON array.
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


def _key_lookup(tasks: Sequence[NewTask], inserted: set[str]) -> dict[str, str] | None:
    # The parameter of TASKS_FOR_KEYS for the tasks INSERT_TASKS did not insert (their
    # key was used before, or earlier in the batch).
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


# 2. Due -------------------------------------------------------------------------------

# Per task name, for admission control: the tasks accepted, due and not started (how
# many, and how long the oldest has waited), and the tasks that finished in the last
# `window` seconds (the pace at which workers get through them). Each part is read
# through its own index: the unfinished rows, and a short range of `finished_at`.
_UNSTARTED = (
    select(
        TaskRun.name,
        func.count().label("waiting"),
        epoch_seconds(func.now() - func.min(TaskRun.due_at)).label("oldest"),
        literal(0).label("finished"),
    )
    .where(
        TaskRun.finished_at.is_(None),
        TaskRun.started_at.is_(None),
        TaskRun.due_at <= func.now(),
    )
    .group_by(TaskRun.name)
)
_FINISHED_LATELY = (
    select(TaskRun.name, literal(0), literal(0.0), func.count())
    .where(TaskRun.finished_at > seconds_before_now(bindparam("window")))
    .group_by(TaskRun.name)
)
BACKLOG: CompoundSelect[Any] = union_all(_UNSTARTED, _FINISHED_LATELY)


@dataclass(frozen=True)
class NameBacklog:
    """One part of what the ledger holds of a task name's queue (`backlog`)."""

    name: str
    # Due tasks nobody started, and the seconds the oldest of them has waited.
    waiting: int
    oldest: float
    # Tasks finished in the window read.
    finished: int


def backlog(connection: Connection, window: float) -> list[NameBacklog]:
    """Per task name, its due tasks nobody started (how many, and the oldest's wait) and,
    in a part of its own, its tasks finished in the last `window` seconds; a name has
    only the parts it has rows for."""
    return [
        NameBacklog(row.name, int(row.waiting), float(row.oldest), int(row.finished))
        for row in connection.execute(BACKLOG, {"window": window})
    ]


# 3. Dispatched ------------------------------------------------------------------------


@dataclass(frozen=True)
class Dispatch:
    """One task to publish: its id, name and JSON keyword arguments."""

    task_id: str
    name: str
    args: dict[str, Any]
    # Who asked for it (the API token's subject): the worker runs the task for them.
    caller: str
    # W3C traceparent stored with the task: every publish of it continues that trace.
    traceparent: str | None = None
    # Published before and never finished: some delivery of it may have run (step 4).
    again: bool = False
    # Who made the row: "api" for a task the API accepted, whose outcome only the
    # ledger serves; a sibling's `send_task` (and beat, a trigger) otherwise.
    origin: str = "api"


def _marking(claimed: Any) -> Any:
    """The UPDATE that marks the rows `claimed` selects, returning what to publish."""
    return (
        update(TaskRun)
        .where(TaskRun.task_id.in_(claimed.scalar_subquery()))
        .returning(
            TaskRun.task_id,
            TaskRun.name,
            TaskRun.args,
            TaskRun.caller,
            TaskRun.traceparent,
            TaskRun.origin,
        )
    )


# Run at every commit of new tasks by every dispatcher: building and hashing the
# statement cost more than running it on an empty claim.
CLAIM_FRESH = _marking(
    select(TaskRun.task_id)
    .where(TaskRun.dispatched_at.is_(None), TaskRun.due_at <= func.now())
    .order_by(TaskRun.due_at)
    .limit(bindparam("claim_limit"))
    .with_for_update(skip_locked=True)
).values(dispatched_at=func.now())


def claim_fresh(connection: Connection, limit: int = CLAIM_BATCH) -> list[Dispatch]:
    """Mark as dispatched now, and return, tasks never published whose time has come:
    new ones, and countdowns that ran out. Rows another dispatcher claims are skipped."""
    return _dispatches(connection.execute(CLAIM_FRESH, {"claim_limit": limit}))


def claim_lost(
    connection: Connection, redispatch_after: int, limit: int = CLAIM_BATCH
) -> list[Dispatch]:
    """Mark as dispatched now, and return, tasks published more than `redispatch_after`
    seconds ago that have no outcome and that nobody is running.

    A task running right now holds its row locked (workers.base) and is skipped; a
    delivery on a host that vanished loses that lock within DB_SILENT_CLIENT_SECONDS
    (server keepalives, core.db.session_options), and only then is its task published
    again. The wait doubles with each redispatch (up to 64 times).
    """
    earliest = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, redispatch_after)
    backoff = func.power(2, func.least(TaskRun.redispatches, MAX_BACKOFF_DOUBLINGS))
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, redispatch_after * backoff)
    lost = (
        select(TaskRun.task_id)
        .where(
            TaskRun.finished_at.is_(None),
            TaskRun.dispatched_at < earliest,
            TaskRun.dispatched_at < cutoff,
        )
        .order_by(TaskRun.dispatched_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    marking = _marking(lost).values(dispatched_at=func.now(), redispatches=TaskRun.redispatches + 1)
    return _dispatches(connection.execute(marking), again=True)


def _dispatches(result: Iterable[Any], *, again: bool = False) -> list[Dispatch]:
    return [
        Dispatch(row.task_id, row.name, row.args, row.caller, row.traceparent, again, row.origin)
        for row in result
    ]


def release(connection: Connection, dispatches: Sequence[Dispatch]) -> None:
    """Mark tasks whose publish failed as never dispatched, so the next scan retries them."""
    if dispatches:
        connection.execute(
            update(TaskRun)
            .where(
                TaskRun.task_id.in_([d.task_id for d in dispatches]),
                TaskRun.finished_at.is_(None),
            )
            .values(dispatched_at=None)
        )


# 4. Started / retry -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A recorded outcome: the JSON result, or the error `{"type", "message", "status"}`."""

    state: TaskState
    result: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Delivery:
    """What `begin_delivery` found: how many times the id has arrived, who asked for the
    task (the API caller of a task the API accepted), and its outcome if it has one."""

    count: int
    caller: str
    outcome: Outcome | None


UNFINISHED = TaskRun.finished_at.is_(None)


def _first_row(**values: Any) -> Any:
    """The INSERT of a task's row made by its first delivery (a task the API never saw),
    with `values` besides."""
    return insert(TaskRun).values(
        task_id=bindparam("run_id"),
        name=bindparam("run_name"),
        args=bindparam("run_args"),
        caller=bindparam("run_caller"),
        origin=bindparam("run_origin"),
        # When the message was sent, or became due, if it says so; else now (its wait
        # then reads as none).
        due_at=func.coalesce(bindparam("run_due", type_=DateTime(timezone=True)), func.now()),
        dispatched_at=func.now(),
        started_at=func.now(),
        deliveries=1,
        **values,
    )


_counted = _first_row(state=TaskState.STARTED.value)
COUNT_DELIVERY = _counted.on_conflict_do_update(
    index_elements=[TaskRun.task_id],
    set_={
        "deliveries": TaskRun.deliveries + 1,
        "started_at": func.coalesce(TaskRun.started_at, func.now()),
        # The existing row's values: a finished task keeps its outcome.
        "state": case((UNFINISHED, TaskState.STARTED.value), else_=TaskRun.state),
    },
).returning(
    TaskRun.deliveries,
    TaskRun.caller,
    TaskRun.state,
    TaskRun.result,
    TaskRun.error,
    TaskRun.finished_at,
)
_OUTCOME_COLUMNS = (TaskRun.state, TaskRun.result, TaskRun.error, TaskRun.finished_at)
CLAIM_RUN = (
    select(
        *_OUTCOME_COLUMNS,
        # The guard transaction sits idle while the task's own transactions run, so the
        # silent-client bound of every other transaction (core.db.session_options)
        # would end it mid-task: it may idle as long as the task may run.
        func.set_config(
            literal("idle_in_transaction_session_timeout"), bindparam("guard_idle"), true()
        ).label("guard_idle"),
    )
    .where(TaskRun.task_id == bindparam("run_id"))
    # NO KEY: progress rows reference this one, and their foreign-key check must not
    # wait for the lock their own task holds.
    .with_for_update(key_share=True)
)
# A row another delivery holds locked is left as it is: that delivery's outcome or
# state is the one to show, and waiting for it would hold this process.
MARK_STATE = (
    update(TaskRun)
    .where(
        TaskRun.task_id
        == select(TaskRun.task_id)
        .where(TaskRun.task_id == bindparam("run_id"), UNFINISHED)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    .values(state=bindparam("run_state"))
)
_progress = insert(TaskProgress).values(
    task_id=bindparam("run_id"), progress=bindparam("run_progress")
)
RECORD_PROGRESS = _progress.on_conflict_do_update(
    index_elements=[TaskProgress.task_id],
    set_={"progress": _progress.excluded.progress, "updated_at": func.now()},
)


def begin_delivery(
    connection: Connection,
    context: TaskContext,
    args: dict[str, Any],
    origin: str,
    due: datetime | None = None,
) -> Delivery:
    """Count a delivery of the task (the row is created for tasks the API never saw,
    due at `due`: when its message was sent or became due, if known).

    Runs on an autocommit connection: the count must survive whatever happens next.
    """
    row = connection.execute(
        COUNT_DELIVERY,
        {
            "run_id": context.task_id,
            "run_name": context.task_name,
            "run_args": args,
            "run_caller": context.caller,
            "run_origin": origin,
            "run_due": due,
        },
    ).one()
    return Delivery(count=row.deliveries, caller=row.caller, outcome=_outcome(row))


def claim_run(session: Session, task_id: str, idle_seconds: int) -> Outcome | None:
    """Lock the task's row until the transaction ends; its outcome if it has one.

    The transaction may stay idle `idle_seconds` (the task's hard time limit, after
    which its process is gone, and a margin) while the task works on other connections. Another
    delivery holding the row makes this give up after the lock timeout (a transient
    error: the task base tries again later) rather than wait for it.
    """
    row = (
        session.connection()
        .execute(CLAIM_RUN, {"run_id": task_id, "guard_idle": f"{idle_seconds}s"})
        .one()
    )
    return _outcome(row)


def mark_state(connection: Connection, task_id: str, state: TaskState) -> None:
    """Show a state (RETRY) of an unfinished task; a finished one keeps its outcome."""
    connection.execute(MARK_STATE, {"run_id": task_id, "run_state": state.value})


def record_progress(connection: Connection, task_id: str, progress: dict[str, Any]) -> None:
    """Store the latest progress of a running task."""
    connection.execute(RECORD_PROGRESS, {"run_id": task_id, "run_progress": progress})


# 5. Success / failure -----------------------------------------------------------------

RECORD_OUTCOME = (
    update(TaskRun)
    .where(TaskRun.task_id == bindparam("run_id"), UNFINISHED)
    .values(
        state=bindparam("run_state"),
        result=bindparam("run_result"),
        error=bindparam("run_error"),
        finished_at=func.now(),
    )
    .returning(TaskRun.task_id)
)
RECORDED_OUTCOME = select(*_OUTCOME_COLUMNS).where(TaskRun.task_id == bindparam("run_id"))
TASK_STATUS = (
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
    .where(TaskRun.task_id == bindparam("run_id"))
)
FINISHED_AMONG = select(TaskRun.task_id).where(
    TaskRun.task_id.in_(bindparam("run_ids", expanding=True)), TaskRun.finished_at.is_not(None)
)


@dataclass(frozen=True)
class FirstDelivery:
    """A delivery that counts itself where it records its outcome (step 4d), and what
    its task's row is made of when the task has none yet."""

    args: dict[str, Any]
    origin: str
    due: datetime | None


class NotFirst(Exception):
    """A delivery that counted itself at the end found its task finished, or recorded for
    another caller: its work rolls back and it runs again as a later delivery."""

    def __init__(self) -> None:
        super().__init__("the task has a recorded outcome or caller of its own")


def _finishing(*, counted: int, same_caller: bool) -> Any:
    """The statement that records an outcome, making the task's row if it has none and
    adding `counted` to its deliveries; it leaves a finished row as it is (and, with
    `same_caller`, a row recorded for another caller) and then returns no row."""
    row = _first_row(
        state=bindparam("run_state"),
        result=bindparam("run_result"),
        error=bindparam("run_error"),
        finished_at=func.now(),
    )
    condition: ColumnElement[bool] = UNFINISHED
    if same_caller:
        condition = UNFINISHED & (TaskRun.caller == row.excluded.caller)
    return row.on_conflict_do_update(
        index_elements=[TaskRun.task_id],
        set_={
            "deliveries": func.greatest(TaskRun.deliveries + counted, 1),
            "started_at": func.coalesce(TaskRun.started_at, func.now()),
            "state": row.excluded.state,
            "result": row.excluded.result,
            "error": row.excluded.error,
            "finished_at": func.now(),
        },
        where=condition,
    ).returning(TaskRun.task_id)


FINISH_FIRST = _finishing(counted=1, same_caller=True)
RECORD_KILLED = _finishing(counted=0, same_caller=False)


def finish_first_delivery(
    session: Session, context: TaskContext, first: FirstDelivery, outcome: Outcome
) -> None:
    """Count the delivery and record its outcome in the transaction of its work, one
    statement for both (step 4d); `NotFirst` when the task is finished already or was
    recorded for another caller than the one the work ran for."""
    written = (
        session.connection()
        .execute(FINISH_FIRST, _finish_parameters(context, first, outcome))
        .one_or_none()
    )
    if written is None:
        raise NotFirst


def record_killed(
    connection: Connection, context: TaskContext, args: dict[str, Any], outcome: Outcome
) -> bool:
    """Record the outcome of a delivery its worker killed (the hard time limit) unless
    one stands, making the task's row if the killed delivery had not made it yet (as
    `context.caller`'s); whether it was written."""
    first = FirstDelivery(args=args, origin=context.caller, due=None)
    written = connection.execute(RECORD_KILLED, _finish_parameters(context, first, outcome))
    return written.one_or_none() is not None


def _finish_parameters(
    context: TaskContext, first: FirstDelivery, outcome: Outcome
) -> dict[str, Any]:
    return {
        "run_id": context.task_id,
        "run_name": context.task_name,
        "run_args": first.args,
        "run_caller": context.caller,
        "run_origin": first.origin,
        "run_due": first.due,
        "run_state": outcome.state.value,
        "run_result": outcome.result,
        "run_error": outcome.error,
    }


class Superseded(Exception):
    """Another delivery of the task recorded its outcome first; this one's work must
    roll back, and `outcome` is the answer to give."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__("another delivery of this task recorded its outcome first")
        self.outcome = outcome


def record_outcome(session: Session, task_id: str, outcome: Outcome) -> Outcome:
    """Write the outcome unless one is recorded already; returns the one that stands."""
    try:
        record_first_outcome(session, task_id, outcome)
    except Superseded as superseded:
        return superseded.outcome
    return outcome


def record_first_outcome(session: Session, task_id: str, outcome: Outcome) -> None:
    """Write the outcome in the transaction of the task's work, or raise `Superseded`
    (carrying the outcome that stands) when another delivery recorded one first."""
    connection = session.connection()
    if not write_first_outcome(connection, task_id, outcome):
        stored = connection.execute(RECORDED_OUTCOME, {"run_id": task_id}).one()
        raise Superseded(_outcome(stored) or outcome)


def write_first_outcome(connection: Connection, task_id: str, outcome: Outcome) -> bool:
    """Write the outcome unless one stands; whether it was written."""
    written = connection.execute(
        RECORD_OUTCOME,
        {
            "run_id": task_id,
            "run_state": outcome.state.value,
            "run_result": outcome.result,
            "run_error": outcome.error,
        },
    ).one_or_none()
    return written is not None


def task_status(connection: Connection, task_id: str) -> Row[Any] | None:
    """The task's name, caller, origin, state, result, error and progress, if it is known.

    A NULL state is a record older than the ledger: its outcome is in the result backend.
    """
    return connection.execute(TASK_STATUS, {"run_id": task_id}).one_or_none()


def finished_among(connection: Connection, task_ids: Collection[str]) -> set[str]:
    """Which of these tasks have an outcome (one indexed read for all of them)."""
    return set(connection.scalars(FINISHED_AMONG, {"run_ids": list(task_ids)}))


def _outcome(row: Any) -> Outcome | None:
    if row.finished_at is None:
        return None
    # Records older than the ledger finished without a stored outcome.
    return Outcome(TaskState(row.state or TaskState.SUCCESS), row.result, row.error)


# 6. Pruned ----------------------------------------------------------------------------


def _prune_task_runs() -> Select[int]:
    """One statement: delete the finished rows past retention and add what they counted
    (failures by error label, redispatches) to task_run_totals, so the counters of
    `GET /metrics` do not go down when rows go."""
    cutoff = func.now() - func.make_interval(0, 0, 0, TASK_RUN_RETENTION_DAYS)
    pruned = (
        delete(TaskRun)
        .where(TaskRun.finished_at < cutoff)
        .returning(TaskRun.name, TaskRun.state, TaskRun.error, TaskRun.redispatches)
        .cte("pruned")
    )
    failed = pruned.c.state == TaskState.FAILURE.value
    label = case((failed, failure_label(pruned.c.error["type"].astext)), else_="")
    counted = select(
        pruned.c.name,
        label.label("failure"),
        func.count().filter(failed),
        func.coalesce(func.sum(pruned.c.redispatches), 0),
    ).group_by(pruned.c.name, "failure")
    fold = insert(TaskRunTotal).from_select(["name", "error", "failures", "redispatches"], counted)
    folded = fold.on_conflict_do_update(
        index_elements=[TaskRunTotal.name, TaskRunTotal.error],
        set_={
            "failures": TaskRunTotal.failures + fold.excluded.failures,
            "redispatches": TaskRunTotal.redispatches + fold.excluded.redispatches,
        },
    ).cte("folded")
    return select(func.count()).select_from(pruned).add_cte(folded)


PRUNE_TASK_RUNS = _prune_task_runs()


def prune_task_runs(session: Session) -> int:
    """Forget finished tasks (outcomes and idempotency keys) past retention; how many.

    Unfinished ones stay whatever their age: they are still to run.
    """
    return session.execute(PRUNE_TASK_RUNS).scalar_one()


# Readers of `GET /metrics` ------------------------------------------------------------

TASKS_ACCEPTED = (
    select(TaskRun.name, func.count()).where(TaskRun.origin == "api").group_by(TaskRun.name)
)
TASK_QUEUE_WAIT = (
    select(
        TaskRun.name,
        *TASK_WAIT_HISTOGRAM.columns(
            func.greatest(epoch_seconds(TaskRun.started_at - TaskRun.due_at), 0)
        ),
    )
    .where(TaskRun.started_at.is_not(None))
    .group_by(TaskRun.name)
)
# Failures and redispatches count the rows still in task_runs plus what pruned rows
# counted (task_run_totals), in one statement: one snapshot, so a prune committing
# between two reads cannot count a row twice or not at all, and one pass over the
# table for both. Every task name seen gets its rows, at 0 until something happens.
_FAILED = TaskRun.state == TaskState.FAILURE.value
_outcomes = union_all(
    select(
        TaskRun.name,
        case((_FAILED, failure_label(TaskRun.error["type"].astext)), else_="").label("failure"),
        func.count().filter(_FAILED).label("failures"),
        func.sum(TaskRun.redispatches).label("redispatches"),
    ).group_by(TaskRun.name, "failure"),
    select(TaskRunTotal.name, TaskRunTotal.error, TaskRunTotal.failures, TaskRunTotal.redispatches),
).subquery()
TASK_OUTCOMES = (
    select(
        _outcomes.c.name,
        _outcomes.c.failure,
        func.sum(_outcomes.c.failures),
        func.sum(_outcomes.c.redispatches),
    )
    .group_by(_outcomes.c.name, _outcomes.c.failure)
    .order_by(_outcomes.c.name, _outcomes.c.failure)
)
# Tasks due and not handed to the broker: new ones wait milliseconds for a dispatcher,
# so an old one means no dispatcher runs (or none can reach the broker).
DISPATCH_LAG = select(
    func.count(),
    func.coalesce(epoch_seconds(func.now() - func.min(TaskRun.due_at)), 0),
).where(TaskRun.dispatched_at.is_(None), TaskRun.due_at <= func.now())


def accepted_by_name(connection: Connection) -> list[tuple[str, int]]:
    """Per task name, the tasks the API (or `matchops enqueue`) accepted and still holds."""
    return [(name, int(count)) for name, count in connection.execute(TASKS_ACCEPTED)]


def queue_waits(connection: Connection) -> list[tuple[str, list[Any]]]:
    """Per task name, its started tasks' waits in `TASK_WAIT_HISTOGRAM`'s columns."""
    return [(row[0], list(row[1:])) for row in connection.execute(TASK_QUEUE_WAIT)]


def outcome_counts(connection: Connection) -> list[tuple[str, str, int, int]]:
    """Per task name and failure label ("" for the tasks that did not fail): failures
    and redispatches, pruned rows included."""
    return [
        (name, failure, int(failures), int(redispatches))
        for name, failure, failures, redispatches in connection.execute(TASK_OUTCOMES)
    ]


def dispatch_lag(connection: Connection) -> tuple[int, float]:
    """How many due tasks no dispatcher handed out yet, and how long the oldest waited."""
    count, lag = connection.execute(DISPATCH_LAG).one()
    return int(count), float(lag)
