"""Worker process signals."""

from __future__ import annotations

from typing import Any

from billiard.einfo import ExceptionInfo
from celery.signals import task_failure, worker_process_init

from core.db import dispose_engine
from core.errors import DomainError


@worker_process_init.connect
def _fresh_pool_after_fork(**_: Any) -> None:
    # A forked child must not share the parent's pooled sockets with its siblings.
    dispose_engine()


@task_failure.connect
def _refusals_without_traceback(exception: BaseException, einfo: ExceptionInfo, **_: Any) -> None:
    # A domain refusal (404 "user not found", 409) is an answer, not a crash: the worker
    # sends this text as the failure event's traceback, which Flower shows on the task.
    if isinstance(exception, DomainError):
        einfo.traceback = f"{type(exception).__name__} (HTTP {exception.status}): {exception}"
