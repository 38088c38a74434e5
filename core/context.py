"""Who a piece of work runs for: the task and its caller, carried with the session."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

# The key of `Session.info` under which the task base puts the running task's context.
TASK_INFO_KEY = "task"
# The message header naming who sent a task that did not come through the API (beat
# sets it); a bare `send_task` sets none.
CALLER_HEADER = "matchops_caller"
# The message header saying when it was sent (seconds since the epoch, the sender's
# clock): every process of this app sets it at publish (workers.signals), so a task's
# queue wait counts from then even when its `task_runs` row is made at first delivery.
SENT_AT_HEADER = "matchops_sent_at"
# The headers a dispatcher puts on a task the API accepted: the caller recorded with it,
# for whom the task's work runs, and, on a task published again because it went
# missing, that some delivery of it may have run before.
RECORDED_CALLER_HEADER = "matchops_recorded_caller"
REDISPATCH_HEADER = "matchops_redispatch"


@dataclass(frozen=True)
class TaskContext:
    """The task a session works for: its id, its name, and who asked for it.

    `caller` is the API token's `sub`, or `beat`, `trigger` or `send_task`.
    """

    task_id: str
    task_name: str
    caller: str


def task_context(session: Session) -> TaskContext | None:
    """The context of the task whose transaction `session` is, if any."""
    context = session.info.get(TASK_INFO_KEY)
    return context if isinstance(context, TaskContext) else None


def attach_context(session: Session, context: TaskContext | None) -> Session:
    """Mark `session` as a transaction of the task `context` (for work that opens its
    own sessions, such as a task with its own transactions); returns the session."""
    if context is not None:
        session.info[TASK_INFO_KEY] = context
    return session
