"""The next sweep of one topic, replayed in memory: which requests it would pair.

`peer.explain` asks this of a request's topic. A commit that adds pending requests
triggers a sweep of its topic, every difficulty of it (with the other topics due in the
same window), and that sweep, as if of this topic alone, is replayed here, rule by rule
with the sweep's own functions: the pools it takes (`fewest_waiting`), the pairs it asks
the cap for (`pairs_wanted`), the part of the cap it gets (what is free, at most what it
asks), the oldest requests of each pool it claims for that (`claim_limits`), and their
pairing (`pair_claimed`: within pools, the oldest pairs the budget keeps over all the
topic's pools, by the older request's created_at, then id; then relaxation across
adjacent difficulties with what room is left). Only the reads differ: the topic's
pending requests in one statement, unlocked.

What stays approximate, because it is not decided yet when explain answers:

- the budget is what the cap has free now. Sweeps of other topics may take part of it
  first, open matches come and go (confirmed, declined, expired), and the shares of a
  sweep of every pool (beat's safety tick), and a triggered sweep of the topics due in
  one window, rank the pairs of several topics against one another, not those of one
  topic;
- a sweep of one difficulty (`peer.sweep` with `difficulty`) ranks one pool's pairs and
  never relaxes;
- a pool another sweep holds right now is replayed as if free (explain says `pool_busy`
  for the request's own), and rows that an expiry or a cancellation has locked at that
  instant, which a claim skips, are replayed as claimable.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Text, bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from core.sql import epoch_microseconds
from domain.peer.declines import recent_declines
from domain.peer.pairing import PoolQueue, UserPair
from domain.peer.shares import claim_limits
from domain.peer.sweep import CLAIM_SLACK, fewest_waiting, pair_claimed, pairs_wanted
from models.peer import MatchRequest, RequestStatus

# Oldest first, as a sweep claims a pool.
_QUEUE_ORDER = (MatchRequest.created_at, MatchRequest.id)

# Every pool of a topic as a sweep claims it: pending requests of each difficulty,
# oldest first; and the database's clock, which decides who is overdue for relaxation.
TOPIC_POOLS = (
    select(
        MatchRequest.difficulty,
        func.array_agg(aggregate_order_by(cast(MatchRequest.id, Text), *_QUEUE_ORDER)).label(
            "request_ids"
        ),
        func.array_agg(aggregate_order_by(MatchRequest.user_id, *_QUEUE_ORDER)).label("user_ids"),
        func.array_agg(
            aggregate_order_by(epoch_microseconds(MatchRequest.created_at), *_QUEUE_ORDER)
        ).label("created_us"),
        epoch_microseconds(func.now()).label("now_us"),
    )
    .where(
        MatchRequest.topic == bindparam("topic"),
        MatchRequest.status == RequestStatus.PENDING,
    )
    .group_by(MatchRequest.difficulty)
)


@dataclass(frozen=True)
class TopicQueues:
    """A topic's pools as read for a replay, the declines among their users, and the
    database's clock at the read (microseconds since the epoch)."""

    queues: list[PoolQueue]
    declined: set[UserPair]
    now_us: int

    def holds(self, request_id: str) -> bool:
        """Whether the request was pending when the topic was read."""
        return any(request_id in queue.request_ids for queue in self.queues)


def read_topic(session: Session, topic: str) -> TopicQueues:
    """The topic's pending requests, pool by pool, and the declines among their users."""
    rows = session.connection().execute(TOPIC_POOLS, {"topic": topic}).all()
    queues = [
        PoolQueue((row.difficulty, topic), row.request_ids, row.user_ids, row.created_us)
        for row in rows
    ]
    users = [user for queue in queues for user in queue.user_ids]
    declined = recent_declines(session, users)
    return TopicQueues(queues, declined, rows[0].now_us if rows else 0)


def swept_requests(topic: TopicQueues, free_pairs: int | None, relax_after: int | None) -> set[str]:
    """The ids of the requests a sweep of the topic would pair, with room for
    `free_pairs` pairs left in the open-match cap (None: as if there were no cap), and
    relaxation after `relax_after` seconds (None: off)."""
    relaxing = relax_after is not None
    queues = [queue for queue in topic.queues if len(queue.request_ids) >= fewest_waiting(relaxing)]
    waiting = {queue.pool: len(queue.request_ids) for queue in queues}
    wanted = pairs_wanted(waiting, relaxing)
    budget = wanted if free_pairs is None else min(wanted, free_pairs)
    if budget <= 0:
        return set()
    claimed = [
        _oldest(queue, limit)
        for queue, limit in zip(queues, claim_limits(waiting, budget, CLAIM_SLACK), strict=True)
    ]
    pairing = pair_claimed(claimed, topic.declined, budget, relax_after, lambda: topic.now_us)
    swept = {
        queue.request_ids[position]
        for queue, pairs in pairing.exact
        for pair in pairs
        for position in pair
    }
    swept.update(
        request for match in pairing.relaxed for request in (match.request_a, match.request_b)
    )
    return swept


def _oldest(queue: PoolQueue, count: int) -> PoolQueue:
    """The queue's `count` oldest requests: what a claim of that many row-locks."""
    return PoolQueue(
        queue.pool, queue.request_ids[:count], queue.user_ids[:count], queue.created_us[:count]
    )
