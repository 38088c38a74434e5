"""`peer.sweep`: pair the pending requests of every unlocked pool in a few statements.

The database writes one transaction on one core, so a big sweep spreads its pools over a
few lanes (`PEER_SWEEP_LANES` connections, each with its own transaction) that claim,
pair and write side by side. A coordinating transaction holds what is global:

  1. coordinator: count open matches (nothing to do at the cap), list the pools with
     pending requests and their sizes, read the recent declines;
  2. each lane, in parallel: lock its pools that nobody else is sweeping, claim their
     pending requests, pair them in memory (domain.peer.pairing);
  3. coordinator, under the cap lock: count open matches again and share what is left
     of the cap between the lanes, oldest pairs first (domain.peer.lanes);
  4. each lane, in parallel: write its matches, requests and `match.proposed` events in
     one statement, and commit;
  5. coordinator: commit, releasing the cap lock only once every lane's matches are
     visible to the next sweep's count.

Statements per sweep: five for the coordinator and two per lane, whatever the number of
requests. Each lane's pools are paired and written atomically; a lane that fails leaves
its pools pending for the next sweep, and the lanes that committed stay valid.

The `match.proposed` events are written by the lane's write statement rather than
through `core.outbox.emit_events`: their payloads (the new match ids, the deadlines) only
exist inside it, and a round trip to read them back would cost more than the insert.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import TypeVar

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from core.locks import hold_advisory_lock
from domain.peer.lanes import MIN_REQUESTS_PER_LANE, share_budget, split_pools
from domain.peer.pairing import Paired, Pool, Queue, UserPair, pair_count, pair_queues
from domain.peer.rules import DECLINE_COOLDOWN_SECONDS
from models.peer import Match

T = TypeVar("T")

# Pools with two or more pending requests (one alone has nobody to pair with), and how
# many each holds, so the lanes can be given similar shares.
WAITING_POOLS = text(
    """
    SELECT difficulty, topic, count(*) AS waiting
    FROM match_requests
    WHERE status = 'pending'
      AND (CAST(:difficulty AS text) IS NULL OR difficulty = :difficulty)
      AND (CAST(:topic AS text) IS NULL OR topic = :topic)
    GROUP BY difficulty, topic
    HAVING count(*) >= 2
    """
)

# A lane sweeps each of its pools under a transaction-scoped advisory lock keyed by a
# hash of the pool; a pool another sweep holds is skipped, not waited on. The row locks
# keep expiry and cancellation off the claimed requests until the lane commits.
# Each pool comes back as one row of three comma-separated lists (request ids, user ids,
# created_at in microseconds), each oldest first: turning 100,000 rows into Python
# objects costs more than the whole claim.
CLAIM_POOLS = text(
    """
    WITH unlocked AS MATERIALIZED (
        SELECT difficulty, topic
        FROM unnest(CAST(:difficulties AS text[]), CAST(:topics AS text[]))
            AS p(difficulty, topic)
        WHERE pg_try_advisory_xact_lock(
            hashtext('matchops.peer.pool'), hashtext(difficulty || E'\\x1f' || topic)
        )
    )
    SELECT u.difficulty, u.topic, r.request_ids, r.user_ids, r.created_us
    FROM unlocked u
    CROSS JOIN LATERAL (
        SELECT
            string_agg(id::text, ',' ORDER BY created_at, id) AS request_ids,
            string_agg(user_id::text, ',' ORDER BY created_at, id) AS user_ids,
            string_agg(
                CAST(extract(epoch FROM created_at) * 1000000 AS bigint)::text,
                ','
                ORDER BY created_at, id
            ) AS created_us
        FROM (
            SELECT id, user_id, created_at
            FROM match_requests
            WHERE difficulty = u.difficulty AND topic = u.topic AND status = 'pending'
            FOR UPDATE SKIP LOCKED
        ) AS pending
    ) AS r
    WHERE r.request_ids IS NOT NULL
    """
)

# Declines of the last hour: few (people decline by hand), so reading them all is cheaper
# than narrowing them down to the users being paired.
RECENT_DECLINES = text(
    """
    SELECT user_low, user_high
    FROM peer_declines
    WHERE declined_at > now() - make_interval(secs => :cooldown)
    """
)

# The cap on open matches is global, so sweeps of different pools serialise their
# count-and-write step on this one lock; claiming and pairing still run side by side.
OPEN_MATCH_BUDGET_LOCK = "matchops.peer.open_matches"

# One statement writes every match, both requests of each and its `match.proposed`
# event. The pairs arrive as two comma-separated id lists: one text parameter each,
# because adapting 50,000-element arrays client side costs more than the whole write.
# A pair becomes a match only when both of its requests were still pending (HAVING
# count = 2); the claim above guarantees that. The grouping carries the pair's request
# ids and pool (the same for both rows) rather than aggregating them: array and text
# aggregates cost more than the rest of the grouping.
WRITE_MATCHES = text(
    """
    WITH pairs AS (
        SELECT gen_random_uuid() AS match_id, p.request_a, p.request_b
        FROM unnest(
            CAST(string_to_array(:requests_a, ',') AS uuid[]),
            CAST(string_to_array(:requests_b, ',') AS uuid[])
        ) AS p(request_a, request_b)
    ),
    claimed AS (
        UPDATE match_requests r
        SET status = 'matched', match_id = s.match_id
        FROM (
            SELECT match_id, request_a, request_b, request_a AS request_id, true AS older
            FROM pairs
            UNION ALL
            SELECT match_id, request_a, request_b, request_b, false FROM pairs
        ) AS s
        WHERE r.id = s.request_id AND r.status = 'pending'
        RETURNING s.match_id, s.request_a, s.request_b, s.older, r.user_id, r.difficulty, r.topic
    ),
    created AS (
        INSERT INTO matches (
            id, user_a, user_b, difficulty, topic, status, created_at, confirm_deadline,
            request_a, request_b
        )
        SELECT
            match_id,
            min(user_id) FILTER (WHERE older),
            min(user_id) FILTER (WHERE NOT older),
            difficulty,
            topic,
            'pending_confirmation',
            now(),
            now() + make_interval(secs => :confirm_seconds),
            request_a,
            request_b
        FROM claimed
        GROUP BY match_id, request_a, request_b, difficulty, topic
        HAVING count(*) = 2
        RETURNING id, user_a, user_b, difficulty, topic, confirm_deadline
    ),
    proposed AS (
        INSERT INTO outbox (type, data)
        SELECT
            'match.proposed',
            jsonb_build_object(
                'match_id', id,
                'users', jsonb_build_array(user_a, user_b),
                'difficulty', difficulty,
                'topic', topic,
                'confirm_deadline', confirm_deadline
            )
        FROM created
    )
    SELECT count(*) FROM created
    """
)


def count_open_matches(session: Session) -> int:
    """Matches awaiting confirmation right now."""
    return int(
        session.scalar(
            select(func.count()).select_from(Match).where(Match.status == "pending_confirmation")
        )
        or 0
    )


def sweep(
    sessions: sessionmaker[Session],
    *,
    difficulty: str | None,
    topic: str | None,
    max_open_matches: int,
    confirm_seconds: int,
    lanes: int,
    min_per_lane: int = MIN_REQUESTS_PER_LANE,
) -> dict[str, int]:
    """Pair pending requests of every pool (or the pools named) that no other sweep holds.

    Oldest first within a pool, never a user with themself, never two users one of whom
    declined the other within the cooldown, never beyond `max_open_matches` matches
    awaiting confirmation. Big sweeps use up to `lanes` connections at once (see the
    module docstring). Returns `{"matched": number of matches created}`.
    """
    with sessions.begin() as coordinator:
        if count_open_matches(coordinator) >= max_open_matches:
            return {"matched": 0}
        pools = coordinator.execute(WAITING_POOLS, {"difficulty": difficulty, "topic": topic})
        waiting: dict[Pool, int] = {(row.difficulty, row.topic): row.waiting for row in pools}
        shares = split_pools(waiting, lanes, min_per_lane)
        if not shares:
            return {"matched": 0}
        declines = coordinator.execute(RECENT_DECLINES, {"cooldown": DECLINE_COOLDOWN_SECONDS})
        declined: set[UserPair] = {(row.user_low, row.user_high) for row in declines}
        with ExitStack() as stack:
            # A lane's session rolls back when closed uncommitted (on any error).
            lane_sessions = [stack.enter_context(sessions()) for _ in shares]
            # Entered after the sessions, so left before them: every lane's thread is
            # done with its session before any session is closed.
            executor = stack.enter_context(ThreadPoolExecutor(max_workers=len(shares)))

            def in_lanes(work: Callable[[int], T]) -> list[T]:
                if len(shares) == 1:  # a small sweep stays on this thread
                    return [work(0)]
                return list(executor.map(work, range(len(shares))))

            paired = in_lanes(
                lambda lane: claim_and_pair(lane_sessions[lane], shares[lane], declined)
            )
            if not sum(pair_count(lane) for lane in paired):
                return {"matched": 0}
            hold_advisory_lock(coordinator, OPEN_MATCH_BUDGET_LOCK)
            kept = share_budget(paired, max_open_matches - count_open_matches(coordinator))
            created = in_lanes(
                lambda lane: write_and_commit(lane_sessions[lane], kept[lane], confirm_seconds)
            )
        return {"matched": sum(created)}


def claim_and_pair(
    session: Session, pools: Sequence[Pool], declined: set[UserPair]
) -> list[Paired]:
    """Lock the pools nobody else is sweeping, claim their pending requests and pair them."""
    claimed = session.execute(
        CLAIM_POOLS,
        {
            "difficulties": [difficulty for difficulty, _ in pools],
            "topics": [topic for _, topic in pools],
        },
    )
    queues = (
        Queue(
            (row.difficulty, row.topic),
            row.request_ids.split(","),
            list(map(int, row.user_ids.split(","))),
            list(map(int, row.created_us.split(","))),
        )
        for row in claimed
    )
    return pair_queues(queues, declined)


def write_and_commit(session: Session, paired: list[Paired], confirm_seconds: int) -> int:
    """Write the lane's matches and commit its transaction; returns matches created."""
    created = write_matches(session, paired, confirm_seconds)
    session.commit()
    return created


def write_matches(session: Session, paired: list[Paired], confirm_seconds: int) -> int:
    """Create a match per pair, mark both requests matched, emit `match.proposed`."""
    if not pair_count(paired):
        return 0
    created = session.scalar(
        WRITE_MATCHES,
        {
            "requests_a": ",".join(
                queue.request_ids[older] for queue, pairs in paired for older, _ in pairs
            ),
            "requests_b": ",".join(
                queue.request_ids[newer] for queue, pairs in paired for _, newer in pairs
            ),
            "confirm_seconds": confirm_seconds,
        },
    )
    return int(created or 0)
