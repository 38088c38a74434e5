"""What operators see of a running task in Flower, beyond Celery's own events."""

from __future__ import annotations

import json
from typing import Any

from celery import Task

# Celery's documented example name for a custom progress state; Flower's event state shows
# a `task-progress` event as state PROGRESS, and the event's `result` in the Result field.
PROGRESS_EVENT = "task-progress"


def announce_progress(task: Task, progress: dict[str, Any]) -> None:
    """Send `progress` (`{"done", "total", ...}`) of the running `task` as a task event."""
    if task.request.id is None:  # run eagerly: no worker, no events
        return
    task.send_event(PROGRESS_EVENT, result=json.dumps({"progress": progress}))
