"""The Celery application. `celery -A workers.app worker` and `matchops worker` load it."""

from __future__ import annotations

from celery import Celery

# Every module that defines tasks. The API imports them too, for the task catalogue.
TASK_MODULES = (
    "tasks.events",
    "tasks.maintenance",
    "tasks.mentorship",
    "tasks.carpool",
    "tasks.peer",
)

app = Celery("matchops", include=list(TASK_MODULES))
app.config_from_object("celeryconfig")

import workers.signals  # noqa: E402  (connects the worker signal handlers)
import workers.triggers  # noqa: E402,F401  (sends follow-ups after commits)


def load_tasks() -> None:
    """Import every task module so the registry is complete outside a worker."""
    app.loader.import_default_modules()
