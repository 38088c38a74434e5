"""A matchops worker whose pool process kills itself at a chosen point, for tests of
what a worker dying there leaves behind. `python -m tests.killing_worker worker ...`

MATCHOPS_TEST_KILL names the point and the task id:
- `delivered:<task id>`: every time the task arrives, before its delivery is counted: a
  message only the broker's delivery limit can stop;
- `claimed:<task id>`: every time the task's row is locked for work (after the
  delivery was counted, before any effect): a message that keeps killing its worker;
- `committed:<task id>`: once, the whole worker (main process and pool), after the task
  committed its effects and outcome and before the main process acknowledged the
  message (MATCHOPS_TEST_KILL_MARKER is the file that remembers it happened).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from celery.signals import task_postrun, worker_process_init
from sqlalchemy import Engine, event

from workers.app import app

POINT, _, TARGET = os.environ.get("MATCHOPS_TEST_KILL", "").partition(":")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@task_postrun.connect
def _die_after_commit(task_id: str | None = None, **_: Any) -> None:
    marker = Path(os.environ.get("MATCHOPS_TEST_KILL_MARKER", "/nonexistent/marker"))
    if POINT == "committed" and task_id == TARGET and not marker.exists():
        marker.touch()
        # The worker runs in a session of its own: this is the main process and its pool.
        os.killpg(os.getpgrp(), signal.SIGKILL)


# The statement each point dies before.
STATEMENT_AT = {"delivered": "INSERT INTO task_runs", "claimed": "FOR NO KEY UPDATE"}


@worker_process_init.connect
def _die_at_statement(**_: Any) -> None:
    if POINT not in STATEMENT_AT:
        return
    marker = STATEMENT_AT[POINT]

    @event.listens_for(Engine, "before_cursor_execute")
    def _on_statement(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if marker in statement and TARGET in str(parameters):
            _die()


if __name__ == "__main__":
    app.worker_main(sys.argv[1:])
