"""A bare Celery app with one no-op task: the yardstick of per-task overhead.

Same broker, result backend, prefetch and late acknowledgement as matchops' own
workers; nothing else (no task base, no database session, no events).
"""

from __future__ import annotations

from celery import Celery

from core.settings import get_settings

QUEUE = "bench-noop"

_settings = get_settings()
app = Celery("bench-noop", broker=_settings.broker, backend=_settings.backend)
app.conf.update(
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop() -> None:
    """Does nothing."""
