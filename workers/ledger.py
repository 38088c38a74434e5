"""The task ledger: each task id's deliveries and outcome in `task_runs`.

The task base uses it so that every delivery of one task id after the first replays
the first one's outcome and changes nothing:

1. `begin_delivery` counts the delivery in its own committed statement (a worker
   killed mid-task must still have counted it, or a poison message would loop), and
   returns the outcome if one is recorded: a later delivery replays it and stops;
2. the work runs, and its transaction ends by recording the outcome only where none
   stands (`record_first_outcome`), so the outcome commits exactly when the effects do.
   Two deliveries of one id running at once (rare: a redelivery or a duplicate send
   while the first still runs) both reach that statement; the second waits there for
   the first's commit, finds its outcome, and rolls its own work back (`Superseded`).
   Checking at the end rather than locking the row first saves every task a round
   trip for the sake of that rare case;
3. a task with its own transactions cannot roll its committed work back, so it locks
   the row first instead (`claim_run`), in a guard transaction held while it runs: a
   second delivery gives up there after the lock timeout and is tried again later,
   when it finds the outcome.

Every statement here waits for a locked `task_runs` row at most the lock timeout
(core.db.session_options): a delivery that meets the row held by another, live or
silent, is retried later by the task base instead of holding its worker process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, DateTime, bindparam, case, func, literal, select, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.context import TaskContext
from models.platform import TaskProgress, TaskRun

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
STARTED = "STARTED"
RETRY = "RETRY"


@dataclass(frozen=True)
class Outcome:
    """A recorded outcome: the JSON result, or the error `{"type", "message", "status"}`."""

    state: str
    result: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Delivery:
    """What `begin_delivery` found: how many times the id has arrived, who asked for the
    task (the API caller of a task the API accepted), and its outcome if it has one."""

    count: int
    caller: str
    outcome: Outcome | None


# The statements every task runs are built once: SQLAlchemy then only looks up their
# compiled form per execution instead of building and hashing a new statement each time,
# which cost more than the database's own work on them. They run as Core statements, on
# the session's connection where there is a session: they load no ORM objects, and the
# ORM's execution path would cost as much again.
UNFINISHED = TaskRun.finished_at.is_(None)
_counted = insert(TaskRun).values(
    task_id=bindparam("run_id"),
    name=bindparam("run_name"),
    args=bindparam("run_args"),
    caller=bindparam("run_caller"),
    origin=bindparam("run_origin"),
    # When the message was sent, or became due, if it says so; else now (its wait then
    # reads as none).
    due_at=func.coalesce(bindparam("run_due", type_=DateTime(timezone=True)), func.now()),
    dispatched_at=func.now(),
    started_at=func.now(),
    deliveries=1,
    state=STARTED,
)
COUNT_DELIVERY = _counted.on_conflict_do_update(
    index_elements=[TaskRun.task_id],
    set_={
        "deliveries": TaskRun.deliveries + 1,
        "started_at": func.coalesce(TaskRun.started_at, func.now()),
        # The existing row's values: a finished task keeps its outcome.
        "state": case((UNFINISHED, STARTED), else_=TaskRun.state),
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
    which its process is gone) while the task works on other connections. Another
    delivery holding the row makes this give up after the lock timeout (a transient
    error: the task base tries again later) rather than wait for it.
    """
    row = (
        session.connection()
        .execute(CLAIM_RUN, {"run_id": task_id, "guard_idle": f"{idle_seconds}s"})
        .one()
    )
    return _outcome(row)


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
            "run_state": outcome.state,
            "run_result": outcome.result,
            "run_error": outcome.error,
        },
    ).one_or_none()
    return written is not None


def mark_state(connection: Connection, task_id: str, state: str) -> None:
    """Show a state (RETRY) of an unfinished task; a finished one keeps its outcome.

    A row another delivery holds locked is left as it is: that delivery's outcome or
    state is the one to show, and waiting for it would hold this process.
    """
    unlocked = (
        select(TaskRun.task_id)
        .where(TaskRun.task_id == task_id, UNFINISHED)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    connection.execute(update(TaskRun).where(TaskRun.task_id == unlocked).values(state=state))


def record_progress(connection: Connection, task_id: str, progress: dict[str, Any]) -> None:
    """Store the latest progress of a running task."""
    statement = insert(TaskProgress).values(task_id=task_id, progress=progress)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=[TaskProgress.task_id],
            set_={"progress": statement.excluded.progress, "updated_at": func.now()},
        )
    )


def _outcome(row: Any) -> Outcome | None:
    if row.finished_at is None:
        return None
    # Records older than the ledger finished without a stored outcome.
    return Outcome(row.state or SUCCESS, row.result, row.error)
