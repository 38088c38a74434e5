"""Worker process signals."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from core.db import dispose_engine


@worker_process_init.connect
def _fresh_pool_after_fork(**_: Any) -> None:
    # A forked child must not share the parent's pooled sockets with its siblings.
    dispose_engine()
