"""Who a piece of work runs for: the task and its caller, carried with the session."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskContext:
    """The task a session works for: its id, its name, and who asked for it.

    `caller` is the API token's `sub`, or `beat`, `trigger` or `send_task`.
    """

    task_id: str
    task_name: str
    caller: str
