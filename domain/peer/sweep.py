"""`peer.sweep`: pair the pending requests of every unlocked pool in a few statements.

One sweep, whatever the number of requests:
  1. count open matches (nothing to do at the cap),
  2. lock the pools nobody else is sweeping and claim their pending requests,
  3. read the recent declines among the claimed users,
  4. pair in memory (domain.peer.pairing),
  5. under the cap lock: count open matches again, then write matches, requests and
     `match.proposed` events in one statement.

The `match.proposed` events are written by that statement too, rather than through
`core.outbox.emit_events`: their payloads (the new match ids, the deadlines) only exist
inside it, and a round trip to read them back would cost more than the insert.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core.locks import hold_advisory_lock
from domain.peer.pairing import Pair, UserPair, Waiting, oldest_pairs, pair_pools
from domain.peer.rules import DECLINE_COOLDOWN_SECONDS
from models.peer import Match

# Each pool is swept under its own transaction-scoped advisory lock, keyed by a hash of
# the pool; a pool another sweep holds is skipped, not waited on. The lateral scan reads
# each pool in index order, so the in-memory sort that guarantees the order is cheap.
CLAIM_POOLS = text(
    """
    WITH pools AS MATERIALIZED (
        SELECT DISTINCT difficulty, topic
        FROM match_requests
        WHERE status = 'pending'
          AND (CAST(:difficulty AS text) IS NULL OR difficulty = :difficulty)
          AND (CAST(:topic AS text) IS NULL OR topic = :topic)
    ),
    unlocked AS MATERIALIZED (
        SELECT difficulty, topic
        FROM pools
        WHERE pg_try_advisory_xact_lock(
            hashtext('matchops.peer.pool'), hashtext(difficulty || E'\\x1f' || topic)
        )
    )
    SELECT r.id::text, r.user_id, u.difficulty, u.topic, r.created_at
    FROM unlocked u
    CROSS JOIN LATERAL (
        SELECT id, user_id, created_at
        FROM match_requests
        WHERE difficulty = u.difficulty AND topic = u.topic AND status = 'pending'
        ORDER BY created_at, id
        FOR UPDATE SKIP LOCKED
    ) AS r
    """
)

RECENT_DECLINES = text(
    """
    SELECT d.user_low, d.user_high
    FROM peer_declines d
    WHERE d.declined_at > now() - make_interval(secs => :cooldown)
      AND EXISTS (
        SELECT 1 FROM match_requests r WHERE r.user_id = d.user_low AND r.status = 'pending'
      )
      AND EXISTS (
        SELECT 1 FROM match_requests r WHERE r.user_id = d.user_high AND r.status = 'pending'
      )
    """
)

# The cap on open matches is global, so sweeps of different pools serialise their
# count-and-write step on this one lock; claiming and pairing still run side by side.
OPEN_MATCH_BUDGET_LOCK = "matchops.peer.open_matches"

# One statement writes every match, both requests of each and its `match.proposed`
# event. The pairs arrive as two comma-separated id lists: one text parameter each,
# because adapting 50,000-element arrays client side costs more than the whole write.
# A pair becomes a match only when both of its requests were still pending (HAVING
# count = 2); the claim above guarantees that.
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
            SELECT match_id, request_a AS request_id, true AS older FROM pairs
            UNION ALL
            SELECT match_id, request_b, false FROM pairs
        ) AS s
        WHERE r.id = s.request_id AND r.status = 'pending'
        RETURNING s.match_id, s.older, r.id, r.user_id, r.difficulty, r.topic
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
            min(difficulty),
            min(topic),
            'pending_confirmation',
            now(),
            now() + make_interval(secs => :confirm_seconds),
            (array_agg(id) FILTER (WHERE older))[1],
            (array_agg(id) FILTER (WHERE NOT older))[1]
        FROM claimed
        GROUP BY match_id
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
    session: Session,
    *,
    difficulty: str | None,
    topic: str | None,
    max_open_matches: int,
    confirm_seconds: int,
) -> dict[str, int]:
    """Pair pending requests of every pool (or the pools named) that no other sweep holds.

    Oldest first within a pool, never a user with themself, never two users one of whom
    declined the other within the cooldown, never beyond `max_open_matches` matches
    awaiting confirmation. Returns `{"matched": number of matches created}`.
    """
    if count_open_matches(session) >= max_open_matches:
        return {"matched": 0}
    rows = session.execute(CLAIM_POOLS, {"difficulty": difficulty, "topic": topic}).all()
    claimed = [Waiting._make(row) for row in rows]
    if len(claimed) < 2:
        return {"matched": 0}
    declined: set[UserPair] = {
        (row.user_low, row.user_high)
        for row in session.execute(RECENT_DECLINES, {"cooldown": DECLINE_COOLDOWN_SECONDS})
    }
    pairs = pair_pools(claimed, declined)
    if not pairs:
        return {"matched": 0}
    hold_advisory_lock(session, OPEN_MATCH_BUDGET_LOCK)
    budget = max_open_matches - count_open_matches(session)
    created = write_matches(session, oldest_pairs(pairs, budget), confirm_seconds)
    return {"matched": created}


def write_matches(session: Session, pairs: list[Pair], confirm_seconds: int) -> int:
    """Create a match per pair, mark both requests matched, emit `match.proposed`."""
    if not pairs:
        return 0
    created = session.scalar(
        WRITE_MATCHES,
        {
            "requests_a": ",".join(pair.older.request_id for pair in pairs),
            "requests_b": ",".join(pair.newer.request_id for pair in pairs),
            "confirm_seconds": confirm_seconds,
        },
    )
    return int(created or 0)
