"""Follow-ups sent right after the commit that made them due, coalesced per follow-up.

A commit's follow-ups (`core.followups`: the work it made due) are sent here, each as
the task whose declaration serves that work (`followup=` on the declaration).

Coalescing uses a short-lived Redis key per follow-up (`SET NX`), set after the commit
and deleted by the task when it starts: while a sweep or a relay is queued and not yet
started, every further commit that makes it due rides along with it, and a commit after
it started queues the next one, which will see it. A marker row in PostgreSQL would do
the same inside the transaction, but a burst of requests would then queue on that row's
lock; Redis costs one round trip after the commit and no lock.

Sweeps are coalesced across topics: a commit adds its topics to one Redis set and sends
the sweep of due topics unless one is queued; that sweep, as it starts, takes the whole
set (`claim_due_topics`). A topic added before the take is swept by it; one added after
finds the key deleted and queues the next sweep. So one sweep serves every topic that
became due in its window, however many, and a lone commit still gets a sweep of its own.

Events are not sent on: the process that committed them relays them itself, right after
the commit (`relay_now`): one small transaction and a publish cost less than a relay
task's message, delivery and ledger row, and leave no window or queue between a match
and its event. A backlog past one batch (a sweep of every pool writes tens of thousands)
goes to the relay task, sent and coalesced as a sweep is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import cache

import kombu.exceptions
import redis.exceptions

from core.context import CALLER_HEADER
from core.dispatch import PUBLISH_RETRY_POLICY
from core.followups import Due, Followup, send_followups_with
from core.outages import DATABASE_ERRORS
from core.redis_client import redis_client
from core.relay import RELAY_BATCH, relay_pending
from core.settings import get_settings
from workers.app import app
from workers.specs import declared_task, import_task_modules, serving

log = logging.getLogger(__name__)

QUEUED_PREFIX = "matchops:queued:"
# Topics commits made due that no sweep has taken yet.
DUE_TOPICS_KEY = "matchops:due-topics"
# A key outlives its task only when the message was lost (the broker failed after the
# SET); then the first commit after this many milliseconds queues the task again, and
# beat's safety tick covers the time in between.
QUEUED_TTL_MS = 10_000
# A triggered follow-up waits this long, and every commit that makes the same one due
# meanwhile rides along: a burst costs one sweep (and, past a batch of events, one
# relay) per window, instead of one per commit or topic, for 50 ms on the time to match.
FOLLOWUP_DELAY_SECONDS = 0.05

SEND_ERRORS = (redis.exceptions.RedisError, kombu.exceptions.OperationalError, OSError)
# What a relay after commit may meet: the broker, the database it marks rows in, or every
# pooled broker connection of the process in use.
RELAY_ERRORS: tuple[type[Exception], ...] = (
    *SEND_ERRORS,
    *DATABASE_ERRORS,
    kombu.exceptions.LimitExceeded,
)
# How long a relay after commit waits for a pooled broker connection before leaving its
# events to the relay task.
POOL_WAIT_SECONDS = 2.0


def queued_key(followup: Followup) -> str:
    """The Redis key that says `followup` is queued and has not started yet."""
    return QUEUED_PREFIX + followup.key


def send_coalesced(
    followups: Iterable[Followup],
    due_topics: Iterable[str] = (),
    countdown: float = FOLLOWUP_DELAY_SECONDS,
) -> int:
    """Add `due_topics` to the topics the next sweep of due topics covers, then send each
    follow-up, to start in `countdown` seconds, unless the same one is already queued;
    returns how many were sent."""
    wanted = sorted(followups, key=lambda followup: followup.key)
    topics = sorted(due_topics)
    # The key outlives the countdown, so commits meanwhile ride along with this one.
    queued_ms = QUEUED_TTL_MS + int(countdown * 1000)
    pipe = redis_client().pipeline(transaction=False)
    # Added before the queued keys are checked: a sweep that has started (its key gone)
    # either takes these topics or is followed by the one this sends.
    if topics:
        pipe.sadd(DUE_TOPICS_KEY, *topics)
    for followup in wanted:
        pipe.set(queued_key(followup), "1", nx=True, px=queued_ms)
    answers = pipe.execute()[1 if topics else 0 :]
    sent = 0
    for followup, fresh in zip(wanted, answers, strict=True):
        if fresh:
            declared_task(followup.task).apply_async(
                kwargs=followup.arguments(),
                countdown=countdown,
                headers={CALLER_HEADER: "trigger"},
            )
            sent += 1
    return sent


def mark_started(followup: Followup) -> None:
    """Called by a task as it starts: commits from now on queue another run of it."""
    redis_client().delete(queued_key(followup))


def claim_due_topics() -> list[str]:
    """Called by the sweep of due topics after `mark_started`: the topics it sweeps, taken
    from the set at once, so each is swept by this sweep or by the next one queued."""
    pipe = redis_client().pipeline(transaction=True)
    pipe.smembers(DUE_TOPICS_KEY)
    pipe.delete(DUE_TOPICS_KEY)
    members, _ = pipe.execute()
    return sorted(members)


def followups_of(due: Iterable[Due]) -> list[Followup]:
    """The follow-ups that serve `due` work: those of the tasks declared to serve it."""
    return [followup for work in due if (followup := _followup_serving(work)) is not None]


@cache
def _followup_serving(work: Due) -> Followup | None:
    # Looked up once per kind of work, not at every commit: the declarations are fixed
    # once the task modules are imported (a lookup while one is still being imported
    # raises, and is not cached).
    import_task_modules()
    spec = serving(work)
    return None if spec is None else spec.followup


def relay_now() -> bool:
    """Relay one batch of unpublished events from this process, over a pooled broker
    connection; whether that was all of them (False also when the broker or the database
    refused: the relay task then has them)."""
    try:
        relayed = relay_pending(
            lambda: app.pool.acquire(block=True, timeout=POOL_WAIT_SECONDS),
            max_batches=1,
            # A refused broker gives up within a second, not a relay task's seconds:
            # the task that committed the events is waiting.
            retry_policy=PUBLISH_RETRY_POLICY,
        )
    except RELAY_ERRORS as exc:
        log.warning("events not relayed after commit: %s", exc)
        return False
    return relayed < RELAY_BATCH


def _send_after_commit(due: set[Due], topics: set[str]) -> None:
    if not get_settings().commit_triggers:
        return
    if Due.RELAY in due and relay_now():
        due = due - {Due.RELAY}
    followups = followups_of(due)
    try:
        send_coalesced(followups, topics)
    except SEND_ERRORS:
        # The work is committed and safe: beat's safety tick sweeps and relays it.
        log.warning("follow-ups not sent after commit: %s", sorted(f.key for f in followups))


send_followups_with(_send_after_commit)
