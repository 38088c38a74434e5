"""Follow-ups sent right after the commit that made them due, coalesced per follow-up.

Coalescing uses a short-lived Redis key per follow-up (`SET NX`), set after the commit
and deleted by the task when it starts: while a sweep of a topic is queued and not yet
started, every further commit into that topic rides along with it, and a commit after
it started queues the next one, which will see it. A marker row in PostgreSQL would do
the same inside the transaction, but a burst of requests into one topic would then
queue on that row's lock; Redis costs one round trip after the commit and no lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import kombu.exceptions
import redis.exceptions
from sqlalchemy import event
from sqlalchemy.orm import Session

from core.context import CALLER_HEADER
from core.followups import Followup, take_followups
from core.settings import get_settings
from domain.peer.session_store import session_store
from workers.app import app

log = logging.getLogger(__name__)

QUEUED_PREFIX = "matchops:queued:"
# A key outlives its task only when the message was lost (the broker failed after the
# SET); then the first commit after this many milliseconds queues the task again, and
# beat's safety tick covers the time in between.
QUEUED_TTL_MS = 10_000
# A triggered follow-up waits this long, and every commit that makes the same one due
# meanwhile rides along: a burst costs one sweep per window and topic, and one relay
# per window, instead of one per commit, for 50 ms on the time to match. Under a steady
# stream of requests the relay's window matters most: nearly every task commits an event.
FOLLOWUP_DELAY_SECONDS = 0.05

SEND_ERRORS = (redis.exceptions.RedisError, kombu.exceptions.OperationalError, OSError)


def queued_key(followup: Followup) -> str:
    """The Redis key that says `followup` is queued and has not started yet."""
    return QUEUED_PREFIX + followup.key


def send_coalesced(followups: Iterable[Followup], countdown: float = FOLLOWUP_DELAY_SECONDS) -> int:
    """Send each follow-up, to start in `countdown` seconds, unless the same one is
    already queued; returns how many were sent."""
    wanted = sorted(followups, key=lambda followup: followup.key)
    # The key outlives the countdown, so commits meanwhile ride along with this one.
    queued_ms = QUEUED_TTL_MS + int(countdown * 1000)
    pipe = session_store().pipeline(transaction=False)
    for followup in wanted:
        pipe.set(queued_key(followup), "1", nx=True, px=queued_ms)
    sent = 0
    for followup, fresh in zip(wanted, pipe.execute(), strict=True):
        if fresh:
            app.send_task(
                followup.task,
                kwargs=followup.arguments(),
                countdown=countdown,
                headers={CALLER_HEADER: "trigger"},
            )
            sent += 1
    return sent


def mark_started(followup: Followup) -> None:
    """Called by a task as it starts: commits from now on queue another run of it."""
    session_store().delete(queued_key(followup))


def _send_after_commit(session: Session) -> None:
    followups = take_followups(session)
    if not followups or not get_settings().commit_triggers:
        return
    try:
        send_coalesced(followups)
    except SEND_ERRORS:
        # The work is committed and safe: beat's safety tick sweeps and relays it.
        log.warning("follow-ups not sent after commit: %s", sorted(f.key for f in followups))


def _drop_on_rollback(session: Session) -> None:
    take_followups(session)


event.listen(Session, "after_commit", _send_after_commit)
event.listen(Session, "after_rollback", _drop_on_rollback)
