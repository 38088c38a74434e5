"""How far behind each queue is, read from the ledger, and when an enqueue is refused
for it (admission control, MAX_QUEUE_WAIT_SECONDS), for the API's door and the CLI alike.

Two rules refuse an enqueue (429, nothing recorded):

- the contract's: the oldest accepted task of the queue that is due and has not started
  has waited longer than the limit;
- the queue's pace: a task accepted now would wait longer than the limit to start, at
  the pace the workers have been starting that queue's tasks. This one closes the door
  before the first rule can: after a queue drained, the oldest task is young for a whole
  limit's time, and an offered rate R that workers start at C/s would otherwise fill the
  queue with R x the limit, whose last task waits R/C x the limit.

The pace is the rate at which the queue's tasks finished over a short window, taken
from a read where the queue was behind for all of that window (its oldest task has
waited at least the window): a queue that kept up shows the rate work arrived at, not
the rate workers can start it. Until one such read, a read where more tasks wait than
finished in the window gives a first pace (it may count a quiet start of the window, so
it is low: the door then keeps a shorter queue than it could, never a longer one), and
any faster rate seen later raises it. With no pace at all, the first rule alone decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Connection

from core.errors import Overloaded
from core.task_store import backlog
from workers.specs import queue_of

# The longest window the pace is measured over.
MAX_PACE_WINDOW_SECONDS = 5.0


@dataclass(frozen=True)
class Backlog:
    """One queue as the ledger showed it."""

    # Due tasks nobody started, and the seconds the oldest of them has waited.
    waiting: int = 0
    oldest_wait: float = 0.0
    # Tasks per second that finished over the window read.
    finished_rate: float = 0.0
    # Whether the queue was behind for the whole window (its rate is then the pace).
    behind_throughout: bool = False


# A queue the ledger shows nothing of: nothing waits, nothing finished.
IDLE = Backlog()


def pace_window(limit: float) -> float:
    """Seconds the pace is measured over under MAX_QUEUE_WAIT_SECONDS `limit`: a quarter
    of it (the door closes that much sooner after a quiet queue is flooded), at most
    MAX_PACE_WINDOW_SECONDS."""
    return min(limit / 4, MAX_PACE_WINDOW_SECONDS)


def read_backlogs(connection: Connection, limit: float) -> dict[str, Backlog]:
    """Per queue with due tasks nobody started or tasks finished lately, its backlog
    (one read of the ledger)."""
    window = pace_window(limit)
    waiting: dict[str, int] = {}
    oldest: dict[str, float] = {}
    finished: dict[str, int] = {}
    for row in backlog(connection, window):
        queue = queue_of(row.name)
        waiting[queue] = waiting.get(queue, 0) + row.waiting
        oldest[queue] = max(oldest.get(queue, 0.0), row.oldest)
        finished[queue] = finished.get(queue, 0) + row.finished
    return {
        queue: Backlog(
            waiting=waiting[queue],
            oldest_wait=oldest[queue],
            finished_rate=finished[queue] / window,
            behind_throughout=waiting[queue] > 0 and oldest[queue] >= window,
        )
        for queue in waiting
    }


def measured_pace(seen: Backlog, known: float | None, limit: float) -> float | None:
    """The queue's pace after the read `seen`, given the one `known` before it (None:
    none yet).

    A read where the queue was behind all the window measures it. Any other rate is a
    floor: the workers did at least that much, so it raises a known pace (one that came
    out low, from a window with a quiet start, would otherwise keep the queue too short
    ever to be behind a whole window again). Without a known pace, a read where more wait
    than finished in the window gives a first one; a queue that keeps up gives none, as
    its rate is only that of the arrivals.
    """
    rate = seen.finished_rate
    if not rate:
        # Nothing finished: workers stopped or busy elsewhere, no rate to learn from.
        return known
    if seen.behind_throughout:
        return rate
    if known is not None:
        return max(known, rate)
    if seen.waiting >= rate * pace_window(limit):
        return rate
    return None


def refusal(
    queue: str,
    seen: Backlog,
    limit: float,
    *,
    elapsed: float = 0.0,
    admitted: int = 0,
    pace: float | None = None,
) -> Overloaded | None:
    """The refusal (429) of an enqueue into `queue`, or None to accept it.

    `seen` is the queue as last read, `elapsed` seconds ago; `admitted` enqueues were
    accepted since, and `pace` (tasks per second) is the queue's latest measured pace,
    if any. Between two reads the oldest task's wait grows with the clock and the
    backlog with what was admitted, less what the pace has started meanwhile.
    """
    waited = seen.oldest_wait + elapsed
    if seen.waiting and waited > limit:
        # About the time the workers take to start what the queue held when it was last
        # within bounds.
        retry_after = max(1, math.ceil(limit))
        return Overloaded(
            f"the {queue!r} queue is behind: its oldest task has waited {waited:.1f} s to "
            f"start, over MAX_QUEUE_WAIT_SECONDS ({limit:g} s); nothing was enqueued, try "
            f"again in {retry_after} s",
            retry_after=retry_after,
        )
    if pace:
        ahead = max(0.0, seen.waiting + admitted - pace * elapsed)
        wait = ahead / pace
        if wait > limit:
            # About when a task accepted then would start within the limit.
            retry_after = max(1, math.ceil(wait - limit))
            return Overloaded(
                f"the {queue!r} queue is behind: a task accepted now would wait about "
                f"{wait:.1f} s to start ({ahead:.0f} ahead of it, started at {pace:.0f} "
                f"per second), over MAX_QUEUE_WAIT_SECONDS ({limit:g} s); nothing was "
                f"enqueued, try again in {retry_after} s",
                retry_after=retry_after,
            )
    return None
