"""`peer.sweep` of one topic: pair the pending requests of its pools in a few statements.

A sweep of every pool is fanned out as one sweep per topic (`waiting_topics`), so
workers on several machines sweep several topics at once and the database writes them
on several cores. A topic is the unit rather than a pool so that a rule pairing
adjacent difficulties of one topic sees all of them in one transaction.

One topic's sweep:

  1. lock the topic's pools that no other sweep holds (a busy pool is skipped, not
     waited on) and count their pending requests;
  2. reserve part of the open-match cap in a short transaction of its own, under the
     one global lock: the cap minus open matches minus other sweeps' live reservations;
  3. claim (row-lock) only the oldest requests of each pool that the reservation can
     pair, pair them in memory (domain.peer.pairing), keep the oldest pairs that fit;
  4. write matches, requests and `match.proposed` events in one statement, delete the
     reservation in the same transaction, and commit.

Open matches plus live reservations never exceed the cap, whatever the number of sweeps
racing: each reservation is counted and taken under the lock, and turns into matches
in the commit that drops it. Reserving in its own transaction keeps that lock for
milliseconds, so the claims and writes of different topics run side by side.

The `match.proposed` events are written by the write statement rather than through
`core.outbox.emit_events`: their payloads (the new match ids, the deadlines) only exist
inside it, and a round trip to read them back would cost more than the insert.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from core.followups import relay_due
from core.locks import hold_advisory_lock
from domain.peer.pairing import Paired, Queue, UserPair, oldest_pairs, pair_count, pair_queues
from domain.peer.rules import DECLINE_COOLDOWN_SECONDS
from models.peer import Match, MatchReservation

# Topics with a pool of two or more pending requests (one alone has nobody to pair with).
WAITING_TOPICS = text(
    """
    SELECT DISTINCT topic
    FROM (
        SELECT topic
        FROM match_requests
        WHERE status = 'pending'
          AND (CAST(:difficulty AS text) IS NULL OR difficulty = :difficulty)
        GROUP BY difficulty, topic
        HAVING count(*) >= 2
    ) AS pools
    ORDER BY topic
    """
)

# Each pool of the topic under a transaction-scoped advisory lock keyed by a hash of the
# pool; `locked` is false for a pool another sweep holds.
LOCK_POOLS = text(
    """
    SELECT
        difficulty,
        waiting,
        pg_try_advisory_xact_lock(
            hashtext('matchops.peer.pool'), hashtext(difficulty || E'\\x1f' || :topic)
        ) AS locked
    FROM (
        SELECT difficulty, count(*) AS waiting
        FROM match_requests
        WHERE status = 'pending' AND topic = :topic
          AND (CAST(:difficulty AS text) IS NULL OR difficulty = :difficulty)
        GROUP BY difficulty
        HAVING count(*) >= 2
    ) AS pools
    ORDER BY difficulty
    """
)

# A claim takes this many requests per pool beyond what the reservation can pair, so a
# few incompatible requests among the oldest (a user and the partner they declined) do
# not leave the sweep short of partners, or the pool stuck behind them under the cap.
CLAIM_SLACK = 16

# The oldest `:claimable` pending requests of each locked pool. The row locks keep
# expiry and cancellation off them until the sweep commits; the rest of the pool stays
# free. Each pool comes back as one row of three comma-separated lists (request ids,
# user ids, created_at in microseconds), each oldest first: turning thousands of rows
# into Python objects costs more than the whole claim.
CLAIM_POOLS = text(
    """
    SELECT p.difficulty, r.request_ids, r.user_ids, r.created_us
    FROM unnest(CAST(:difficulties AS text[])) AS p(difficulty)
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
            WHERE difficulty = p.difficulty AND topic = :topic AND status = 'pending'
            ORDER BY created_at, id
            LIMIT :claimable
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

# The cap on open matches is global: every reservation of it is counted and taken under
# this one lock, held only by the short reserving transaction.
OPEN_MATCH_BUDGET_LOCK = "matchops.peer.open_matches"

# What is left of the cap, up to what the sweep can use. Reservations older than
# `:stale_after` seconds belong to a sweep that died before deleting its row.
RESERVE = text(
    """
    WITH free AS (
        SELECT least(
            :wanted,
            :cap
            - (SELECT count(*) FROM matches WHERE status = 'pending_confirmation')
            - (SELECT coalesce(sum(pairs), 0) FROM peer_match_reservations
               WHERE reserved_at > now() - make_interval(secs => :stale_after))
        ) AS pairs
    )
    INSERT INTO peer_match_reservations (pairs)
    SELECT pairs FROM free WHERE pairs > 0
    RETURNING id, pairs
    """
)

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


@dataclass(frozen=True)
class TopicSweep:
    """What one topic's sweep did: matches created, requests it row-locked to make them,
    and whether a pool was busy."""

    matched: int
    claimed: int
    busy: bool


@dataclass(frozen=True)
class Reservation:
    """Part of the open-match cap held until the sweep's matches are written."""

    id: uuid.UUID
    pairs: int


def count_open_matches(session: Session) -> int:
    """Matches awaiting confirmation right now."""
    return int(
        session.scalar(
            select(func.count()).select_from(Match).where(Match.status == "pending_confirmation")
        )
        or 0
    )


def waiting_topics(session: Session, difficulty: str | None) -> list[str]:
    """Topics with a pool (of `difficulty`, when given) that has two or more pending requests."""
    return list(session.scalars(WAITING_TOPICS, {"difficulty": difficulty}))


def sweep_topic(
    sessions: sessionmaker[Session],
    *,
    topic: str,
    difficulty: str | None,
    max_open_matches: int,
    confirm_seconds: int,
    stale_after: int,
) -> TopicSweep:
    """Pair the pending requests of the topic's pools (or of its one pool of `difficulty`).

    Oldest first within a pool, never a user with themself, never two users one of whom
    declined the other within the cooldown, never beyond `max_open_matches` matches
    awaiting confirmation. A pool another sweep holds is skipped (`busy`). Reservations
    of the cap older than `stale_after` seconds are ignored (see the module docstring).
    """
    with sessions.begin() as session:
        pools = session.execute(LOCK_POOLS, {"topic": topic, "difficulty": difficulty}).all()
        locked = [row for row in pools if row.locked]
        busy = len(locked) < len(pools)
        wanted = sum(row.waiting // 2 for row in locked)
        if not wanted:
            return TopicSweep(0, 0, busy)
        reservation = reserve(sessions, wanted, max_open_matches, stale_after)
        if reservation is None:
            return TopicSweep(0, 0, busy)
        try:
            paired = claim_and_pair(session, topic, [row.difficulty for row in locked], reservation)
            created = write_matches(session, paired, confirm_seconds)
            session.execute(delete(MatchReservation).where(MatchReservation.id == reservation.id))
        except BaseException:
            release(sessions, reservation)
            raise
        if created:
            relay_due(session)
    return TopicSweep(created, sum(len(queue.request_ids) for queue, _ in paired), busy)


def reserve(
    sessions: sessionmaker[Session], wanted: int, cap: int, stale_after: int
) -> Reservation | None:
    """Reserve up to `wanted` pairs of the open-match cap in a transaction of its own."""
    with sessions.begin() as session:
        hold_advisory_lock(session, OPEN_MATCH_BUDGET_LOCK)
        row = session.execute(
            RESERVE, {"wanted": wanted, "cap": cap, "stale_after": stale_after}
        ).one_or_none()
    return None if row is None else Reservation(row.id, row.pairs)


def release(sessions: sessionmaker[Session], reservation: Reservation) -> None:
    """Give a reservation back after the sweep failed before writing its matches."""
    with sessions.begin() as session:
        session.execute(delete(MatchReservation).where(MatchReservation.id == reservation.id))


def claim_and_pair(
    session: Session, topic: str, difficulties: Sequence[str], reservation: Reservation
) -> list[Paired]:
    """Claim the oldest requests of each pool the reservation can pair, and pair them."""
    claimed = session.execute(
        CLAIM_POOLS,
        {
            "topic": topic,
            "difficulties": list(difficulties),
            "claimable": 2 * reservation.pairs + CLAIM_SLACK,
        },
    )
    queues = [
        Queue(
            (row.difficulty, topic),
            row.request_ids.split(","),
            list(map(int, row.user_ids.split(","))),
            list(map(int, row.created_us.split(","))),
        )
        for row in claimed
    ]
    if not queues:
        return []
    declines = session.execute(RECENT_DECLINES, {"cooldown": DECLINE_COOLDOWN_SECONDS})
    declined: set[UserPair] = {(row.user_low, row.user_high) for row in declines}
    return oldest_pairs(pair_queues(queues, declined), reservation.pairs)


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
