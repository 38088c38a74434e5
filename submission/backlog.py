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

The pace is the rate at which the queue's tasks finished over a short window, measured
only where it says what the workers can do: the queue was behind for all of that window
(its oldest task has waited at least the window; a queue that keeps up shows only the
rate work arrives at) and at least MIN_PACE_SAMPLE tasks finished in it (one or two
tasks behind a long one say nothing). A pace is used while the queue stays behind, for
PACE_LIFETIME_LIMITS limits after it was last measured: one from an earlier overload may
no longer hold. Without a pace, the first rule alone decides, so a queue that has not
been seen behind, or whose workers start nothing, is never refused before its oldest
task has waited the limit.
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
# The fewest tasks finished in a window that measure a pace.
MIN_PACE_SAMPLE = 10
# How long a measured pace is used, in limits (MAX_QUEUE_WAIT_SECONDS) since it was
# last measured: a queue held behind by the door is measured at every read.
PACE_LIFETIME_LIMITS = 2


@dataclass(frozen=True)
class Backlog:
    """One queue as the ledger showed it."""

    # Due tasks nobody started, and the seconds the oldest of them has waited.
    waiting: int = 0
    oldest_wait: float = 0.0
    # Tasks that finished in the `window` seconds before the read.
    finished: int = 0
    window: float = 1.0

    @property
    def pace(self) -> float | None:
        """Tasks per second the workers started, where this read measures it (see the
        module docstring), else None."""
        behind_throughout = self.waiting > 0 and self.oldest_wait >= self.window
        if behind_throughout and self.finished >= MIN_PACE_SAMPLE:
            return self.finished / self.window
        return None


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
    queues: dict[str, Backlog] = {}
    for row in backlog(connection, window):
        queue = queue_of(row.name)
        seen = queues.get(queue, Backlog(window=window))
        queues[queue] = Backlog(
            waiting=seen.waiting + row.waiting,
            oldest_wait=max(seen.oldest_wait, row.oldest),
            finished=seen.finished + row.finished,
            window=window,
        )
    return queues


def fresh_pace(measured: tuple[float, float] | None, now: float, limit: float) -> float | None:
    """The pace to decide with at monotonic moment `now`: the last one `measured` (the
    pace, and the moment of the read that measured it) while it is at most
    PACE_LIFETIME_LIMITS limits old, else None."""
    if measured is None:
        return None
    pace, at = measured
    return pace if now - at <= PACE_LIFETIME_LIMITS * limit else None


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
