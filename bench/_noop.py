"""Bare Celery apps with one no-op task: the yardsticks of per-task overhead.

`app`: the same broker, result backend, prefetch and late acknowledgement as matchops'
own workers; nothing else (no task base, no database session, no events).
`as_matchops`: the same no-op with what Celery does for every task in a matchops worker
besides the task base: task events for Flower, sent in batches by its consumer
(workers.consumer); its bench worker also logs at matchops' level, INFO, and leaves out
the per-task lines as matchops' workers do (core.logs).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init

from core.logs import leave_out_routine_lines
from core.settings import get_settings

QUEUE = "bench-noop"
QUEUE_AS_MATCHOPS = "bench-noop-as-matchops"
NAME = "bench.noop"


def _app(name: str, queue: str, **conf: Any) -> Celery:
    settings = get_settings()
    capp = Celery(name, broker=settings.broker, backend=settings.backend)
    capp.conf.update(
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        broker_connection_retry_on_startup=True,
        **conf,
    )
    return capp


def _nothing() -> None:
    """Does nothing."""


app = _app("bench-noop", QUEUE)
noop = app.task(name=NAME)(_nothing)
as_matchops = _app(
    "bench-noop-as-matchops",
    QUEUE_AS_MATCHOPS,
    worker_send_task_events=True,
    worker_consumer="workers.consumer:Consumer",
)
noop_as_matchops = as_matchops.task(name=NAME)(_nothing)


@worker_init.connect
def _log_as_matchops(sender: Any, **_: Any) -> None:
    if sender.app is as_matchops:
        leave_out_routine_lines(get_settings())
