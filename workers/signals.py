"""Worker and beat process signals."""

from __future__ import annotations

import time
from typing import Any

from billiard.einfo import ExceptionInfo
from celery.signals import (
    beat_init,
    before_task_publish,
    task_failure,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from celeryconfig import DEAD_LETTER_QUEUE, on_rabbitmq
from core import tracing
from core.context import SENT_AT_HEADER
from core.db import check_connections_on_use, get_bookkeeping_engine
from core.dispatcher import Dispatcher
from core.errors import DomainError
from core.logs import leave_out_routine_lines
from core.settings import get_settings


@worker_init.connect
def _trace_worker(**_: Any) -> None:
    # Before the pool forks, so every pool process inherits it (docs/operations.md, Tracing).
    tracing.configure("worker")


@worker_init.connect
def _routine_lines(**_: Any) -> None:
    # Before the pool forks: the pool processes write the `succeeded` lines.
    leave_out_routine_lines(get_settings())


@worker_process_shutdown.connect
def _export_queued_spans(**_: Any) -> None:
    tracing.flush()


@worker_process_init.connect
def _fresh_pool_after_fork(**_: Any) -> None:
    # A forked child must not share the parent's pooled sockets with its siblings; its
    # new engine skips the ping per checkout (the task base retries a dropped connection).
    check_connections_on_use()


@before_task_publish.connect
def _stamp_sent_at(headers: dict[str, Any], **_: Any) -> None:
    # Every message this app sends (beat's ticks, triggers, sweep shares, the
    # dispatchers' publishes, a task's retry) says when it left, for its queue wait.
    headers.setdefault(SENT_AT_HEADER, time.time())


@task_failure.connect
def _refusals_without_traceback(exception: BaseException, einfo: ExceptionInfo, **_: Any) -> None:
    # A domain refusal (404 "user not found", 409) is an answer, not a crash: the worker
    # sends this text as the failure event's traceback, which Flower shows on the task.
    if isinstance(exception, DomainError):
        einfo.traceback = f"{type(exception).__name__} (HTTP {exception.status}): {exception}"


@worker_ready.connect
def _declare_dead_letters(sender: Any, **_: Any) -> None:
    # RabbitMQ drops messages past the delivery limit here; the queue must exist first.
    if on_rabbitmq(sender.app.conf.broker_url):
        with sender.app.connection_for_write() as connection:
            DEAD_LETTER_QUEUE.bind(connection.default_channel).declare()


@worker_ready.connect
def _dispatch_from_worker(sender: Any, **_: Any) -> None:
    # Started once the pool processes are forked. A stack that has a worker can run
    # tasks, so it dispatches them there too: no extra process to deploy, and as many
    # dispatchers as workers (they share the work through SKIP LOCKED claims).
    _start_dispatcher(sender.app)


@beat_init.connect
def _dispatch_from_beat(sender: Any, **_: Any) -> None:
    tracing.configure("beat")
    _start_dispatcher(sender.app)


def _start_dispatcher(app: Any) -> None:
    settings = get_settings()
    Dispatcher(
        app,
        get_bookkeeping_engine(),
        interval=settings.dispatch_interval_seconds,
        redispatch_after=settings.redispatch_after_seconds,
    ).start()
