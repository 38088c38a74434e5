"""A task killed at its hard time limit is not delivered again: it ends as a recorded
FAILURE (TimeLimitExceeded) that the API reads and every later delivery replays."""

from __future__ import annotations

import re
import time

import pytest
from celery.result import AsyncResult

from core.errors import PreviousFailure
from submission.service import describe_task
from tests.factories import unique
from tests.support import queue_taken_from, running_worker, task_finished, task_run, wait_for
from tests.workers.held import (
    HELD_IN_TRANSACTION,
    HELD_WITH_ROW_LOCKED,
    KILLED,
    LIMITS,
    WORKER_ARGS,
)
from workers.app import app


@pytest.mark.parametrize("name", [HELD_IN_TRANSACTION, HELD_WITH_ROW_LOCKED])
def test_a_task_killed_at_its_hard_time_limit_ends_as_a_recorded_failure(worker, name: str):
    task_id = unique("held")
    with (
        queue_taken_from(worker, "interactive"),
        running_worker(
            "held", queues="interactive", extra_env=LIMITS, extra_args=WORKER_ARGS
        ) as held,
    ):
        app.send_task(name, task_id=task_id)
        wait_for(lambda: task_finished(task_id), timeout=30, what="the recorded time limit")
        hard_limit = LIMITS["TASK_TIME_LIMIT"]
        assert f"Hard time limit ({hard_limit}s) exceeded" in held.log_tail(200)
        # Acknowledged, not requeued: a redelivery would be counted within moments.
        time.sleep(3)
        run = task_run(task_id)
        assert (run.state, run.deliveries) == ("FAILURE", 1)
        assert run.error == {"type": "TimeLimitExceeded", "message": KILLED, "status": 500}
        assert describe_task(task_id, reader="operator", may_read_all=True)["error"] == run.error

        # The same id sent again replays the failure at once instead of running again.
        AsyncResult(task_id, app=app).forget()
        again = app.send_task(name, task_id=task_id, ignore_result=False)
        with pytest.raises(PreviousFailure, match=re.escape(f"TimeLimitExceeded: {KILLED}")):
            again.get(timeout=20)
    assert task_run(task_id).deliveries == 2
