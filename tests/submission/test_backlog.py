"""Admission control's rules: when an enqueue is refused for its queue's backlog, and
how the workers' pace is learnt from the ledger."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, literal
from sqlalchemy.orm import Session

from core.errors import Overloaded
from core.sql import seconds_before_now
from core.task_store import backlog
from models.platform import TaskRun
from submission.backlog import (
    IDLE,
    MIN_PACE_SAMPLE,
    PACE_LIFETIME_LIMITS,
    Backlog,
    fresh_pace,
    pace_window,
    read_backlogs,
    refusal,
)
from tests.factories import unique
from workers.specs import import_task_modules

LIMIT = 2.0
# A task of the `maintenance` queue.
MAINTENANCE_TASK = "mentorship.rebuild_stats"


def test_the_oldest_task_waiting_past_the_limit_refuses() -> None:
    seen = Backlog(waiting=1, oldest_wait=1.5)
    assert refusal("maintenance", seen, LIMIT, elapsed=0.4) is None
    refused = refusal("maintenance", seen, LIMIT, elapsed=0.6)
    assert isinstance(refused, Overloaded)
    assert refused.retry_after == 2
    assert "its oldest task has waited 2.1 s" in str(refused)


def test_a_task_that_would_wait_past_the_limit_at_the_pace_is_refused() -> None:
    # 100 ahead at 40 a second: 2.5 s; at 60 a second: 1.7 s.
    seen = Backlog(waiting=100, oldest_wait=0.5)
    refused = refusal("interactive", seen, LIMIT, pace=40.0)
    assert isinstance(refused, Overloaded)
    assert refused.retry_after == 1
    assert "would wait about 2.5 s to start (100 ahead of it, started at 40 per second)" in str(
        refused
    )
    assert "MAX_QUEUE_WAIT_SECONDS (2 s)" in str(refused)
    assert refusal("interactive", seen, LIMIT, pace=60.0) is None


def test_what_was_admitted_since_the_read_counts_less_what_the_pace_started() -> None:
    # A queue that had drained: at 50 a second, 100 fit within the limit, the 101st not.
    assert refusal("interactive", IDLE, LIMIT, admitted=100, pace=50.0) is None
    assert refusal("interactive", IDLE, LIMIT, admitted=101, pace=50.0) is not None
    # Half a second later, 25 of them have started.
    assert refusal("interactive", IDLE, LIMIT, elapsed=0.5, admitted=125, pace=50.0) is None


def test_without_a_pace_only_the_oldest_wait_decides() -> None:
    assert refusal("interactive", Backlog(waiting=10_000, oldest_wait=0.1), LIMIT) is None


@pytest.mark.parametrize(
    ("seen", "pace"),
    [
        # Behind for the whole window, 20 finished in it: 40 a second.
        (Backlog(waiting=5, oldest_wait=0.5, finished=20, window=0.5), 40.0),
        # Not behind all the window: the rate may be only the arrivals'.
        (Backlog(waiting=30, oldest_wait=0.4, finished=20, window=0.5), None),
        (Backlog(oldest_wait=0.0, finished=20, window=0.5), None),
        # Too few finished to say anything (one or two behind a long task).
        (Backlog(waiting=15, oldest_wait=3.0, finished=MIN_PACE_SAMPLE - 1, window=1.25), None),
        (Backlog(waiting=15, oldest_wait=3.0, finished=MIN_PACE_SAMPLE, window=1.25), 8.0),
    ],
)
def test_a_read_measures_the_pace_only_of_a_queue_behind_all_its_window(
    seen: Backlog, pace: float | None
) -> None:
    assert seen.pace == pace


def test_a_pace_is_used_for_a_few_limits_after_it_was_measured() -> None:
    measured = (40.0, 100.0)
    assert fresh_pace(measured, 100.0 + PACE_LIFETIME_LIMITS * LIMIT, LIMIT) == 40.0
    assert fresh_pace(measured, 100.1 + PACE_LIFETIME_LIMITS * LIMIT, LIMIT) is None
    assert fresh_pace(None, 100.0, LIMIT) is None


def _add_runs(db: Session, name: str, caller: str) -> None:
    """30 due and not started, the oldest waiting a second; 20 finished a tenth of a second
    ago, 5 finished five seconds ago. Rows of the test's transaction alone: no worker or
    dispatcher ever sees them."""
    runs = [
        *((1.0 if n == 0 else 0.2, None) for n in range(30)),
        *((3.0, 0.1) for _ in range(20)),
        *((9.0, 5.0) for _ in range(5)),
    ]
    for n, (due, finished) in enumerate(runs):
        due_at = seconds_before_now(literal(due))
        db.execute(
            insert(TaskRun).values(
                task_id=f"{caller}-{n}",
                name=name,
                args={},
                caller=caller,
                origin="api",
                due_at=due_at,
                dispatched_at=func.now(),
                started_at=None if finished is None else due_at,
                finished_at=None if finished is None else seconds_before_now(literal(finished)),
            )
        )


def test_the_ledger_counts_the_waiting_and_the_finished_within_the_window(db: Session) -> None:
    name = unique("backlog-task")
    _add_runs(db, name, unique("backlog"))
    mine = [row for row in backlog(db.connection(), 0.5) if row.name == name]
    assert sum(row.waiting for row in mine) == 30
    assert sum(row.finished for row in mine) == 20
    assert 1.0 <= max(row.oldest for row in mine) < 2.0


def test_a_read_shows_each_queue_behind_and_its_rate(db: Session) -> None:
    import_task_modules()  # the declarations that name each task's queue
    _add_runs(db, MAINTENANCE_TASK, unique("backlog"))
    seen = read_backlogs(db.connection(), LIMIT)["maintenance"]
    # Other tests' tasks of the queue may be there too, never fewer.
    assert seen.waiting >= 30
    assert seen.oldest_wait >= 1.0
    assert seen.finished >= 20
    assert seen.window == pace_window(LIMIT)
    assert seen.pace is not None
