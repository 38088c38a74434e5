"""Who is running the current task: carried with a session so audit rows can name it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

# The key of `Session.info` under which the task base puts the running task's context.
TASK_INFO_KEY = "task"
# The message header naming who asked for a task; a bare `send_task` sets none.
CALLER_HEADER = "matchops_caller"


@dataclass(frozen=True)
class TaskContext:
    """The running task: its id, its name, and who asked for it.

    `caller` is the API token's `sub`, or "beat", "send_task" or "trigger".
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
    own sessions, such as a batched task); returns the session."""
    if context is not None:
        session.info[TASK_INFO_KEY] = context
    return session
