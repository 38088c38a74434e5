"""`peer.sweep` of some topics: pair the pending requests of their pools in a few statements.

A commit that adds pending requests triggers a sweep of its topic; a sweep of every
pool is fanned out as tasks over shares of whole topics (`domain.peer.shares`), so
workers on several machines sweep at once and the database writes on several cores.
A topic is the smallest unit rather than a pool so that a rule pairing adjacent
difficulties of one topic sees all of them in one transaction.

One sweep:

  1. lock the topics' pools that no other sweep holds (a busy pool is skipped, not
     waited on) and count their pending requests;
  2. reserve part of the open-match cap in a short transaction of its own, under the
     one global lock: the cap minus open matches minus other sweeps' live reservations
     (domain.peer.budget);
  3. claim (row-lock) only the oldest requests of each pool that the reservation can
     pair (`claim_limits`), pair them in memory (domain.peer.pairing), keep the oldest
     pairs that fit;
  4. write matches, requests and `match.proposed` events in one statement, delete the
     reservation in the same transaction, and commit.

Reserving in its own transaction keeps the cap's lock for milliseconds, so the claims
and writes of different topics run side by side.

The `match.proposed` events are written by the write statement rather than through
`core.outbox.emit_events`: their payloads (the new match ids, the deadlines) only exist
inside it, and a round trip to read them back would cost more than the insert. Their
type is bound from `core.outbox.checked_event_type`, the check `emit_events` applies.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired

from sqlalchemy import (
    ColumnElement,
    Integer,
    Text,
    any_,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.orm import Session, sessionmaker

from core.followups import relay_due
from core.outbox import checked_event_type
from core.results import TaskResult
from core.sql import epoch_microseconds, seconds_before_now
from domain.peer.budget import Reservation, release, release_in, reserve
from domain.peer.declines import recent_declines
from domain.peer.pairing import (
    Paired,
    Pool,
    PoolQueue,
    UserPair,
    oldest_pairs,
    pair_count,
    pair_queues,
)
from domain.peer.pool_lock import POOLS_HELD_FOR, pool_lock_keys
from domain.peer.relaxation import adjacent, relax_pairs
from domain.peer.shares import claim_limits
from models.peer import MatchRequest, RequestStatus

# Each pool's pending requests (of one difficulty, when given), counted.
_ONE_DIFFICULTY = bindparam("difficulty", type_=Text)
_PENDING_OF_DIFFICULTY = (
    MatchRequest.status == RequestStatus.PENDING,
    or_(_ONE_DIFFICULTY.is_(None), MatchRequest.difficulty == _ONE_DIFFICULTY),
)
_PENDING_POOLS = (
    select(MatchRequest.difficulty, MatchRequest.topic, func.count().label("waiting"))
    .where(*_PENDING_OF_DIFFICULTY)
    .group_by(MatchRequest.difficulty, MatchRequest.topic)
)

# Pools with two or more pending requests (one alone has nobody to pair with), and how
# many each holds, so a sweep of every pool can be split into shares of similar size.
SWEEPABLE_POOLS = _PENDING_POOLS.having(func.count() >= literal_column("2"))

# With relaxation on, every pool with a pending request, and whether its oldest has
# waited past the threshold: one alone may then find a partner next door.
POOLS_WITH_OVERDUE = _PENDING_POOLS.add_columns(
    (
        func.min(MatchRequest.created_at)
        < seconds_before_now(bindparam("relax_after", type_=Integer))
    ).label("overdue")
)

# Pending requests per topic, of the topics named: how big a sweep of them would be.
PENDING_IN_TOPICS = (
    select(MatchRequest.topic, func.count().label("waiting"))
    .where(
        MatchRequest.status == RequestStatus.PENDING,
        MatchRequest.topic == any_(bindparam("topics", type_=ARRAY(Text))),
    )
    .group_by(MatchRequest.topic)
)

# Each pool of the topics under a transaction-scoped advisory lock keyed by a hash of
# the pool; `locked` is false for a pool another sweep holds.
_LOCKABLE_POOLS = (
    _PENDING_POOLS.where(MatchRequest.topic == any_(bindparam("topics", type_=ARRAY(Text))))
    .having(func.count() >= bindparam("fewest"))  # fewest_waiting()
    .subquery("pools")
)
LOCK_POOLS = select(
    _LOCKABLE_POOLS.c.difficulty,
    _LOCKABLE_POOLS.c.topic,
    _LOCKABLE_POOLS.c.waiting,
    func.pg_try_advisory_xact_lock(
        *pool_lock_keys(_LOCKABLE_POOLS.c.difficulty, _LOCKABLE_POOLS.c.topic)
    ).label("locked"),
).order_by(_LOCKABLE_POOLS.c.topic, _LOCKABLE_POOLS.c.difficulty)

# A claim takes this many requests per pool beyond what the reservation can pair, so a
# few incompatible requests among the oldest (a user and the partner they declined) do
# not leave the sweep short of partners, or the pool stuck behind them under the cap.
CLAIM_SLACK = 16

# The oldest `limit` pending requests of each locked pool. The row locks keep
# expiry and cancellation off them until the sweep commits; the rest of the pool stays
# free. Each pool comes back as one row of three comma-separated lists (request ids,
# user ids, created_at in microseconds), each oldest first: turning thousands of rows
# into Python objects costs more than the whole claim.
_CLAIMS = (
    func.unnest(
        bindparam("difficulties", type_=ARRAY(Text)),
        bindparam("topics", type_=ARRAY(Text)),
        bindparam("limits", type_=ARRAY(Integer)),
    )
    .table_valued("difficulty", "topic", "claimable")
    .render_derived(name="p")
)
_CLAIMED = (
    select(MatchRequest.id, MatchRequest.user_id, MatchRequest.created_at)
    .where(
        MatchRequest.difficulty == _CLAIMS.c.difficulty,
        MatchRequest.topic == _CLAIMS.c.topic,
        MatchRequest.status == RequestStatus.PENDING,
    )
    .order_by(MatchRequest.created_at, MatchRequest.id)
    .limit(_CLAIMS.c.claimable)
    .with_for_update(skip_locked=True)
    # Reads the pool of the claim row it is joined to, rather than every claim row.
    .correlate(_CLAIMS)
    .subquery("pending")
)


def _oldest_first_list(value: ColumnElement[Any]) -> ColumnElement[str]:
    """The claimed rows' `value`s as one comma-separated text, oldest first."""
    return func.string_agg(
        cast(value, Text),
        aggregate_order_by(literal_column("','"), _CLAIMED.c.created_at, _CLAIMED.c.id),
    )


_CLAIMED_LISTS = select(
    _oldest_first_list(_CLAIMED.c.id).label("request_ids"),
    _oldest_first_list(_CLAIMED.c.user_id).label("user_ids"),
    _oldest_first_list(epoch_microseconds(_CLAIMED.c.created_at)).label("created_us"),
).lateral("r")
CLAIM_POOLS = (
    select(_CLAIMS.c.difficulty, _CLAIMS.c.topic, *_CLAIMED_LISTS.c)
    .select_from(_CLAIMS)
    .join(_CLAIMED_LISTS, true())
    .where(_CLAIMED_LISTS.c.request_ids.is_not(None))
)

# The database's clock, for how long requests have waited (their created_at is its too).
NOW_US = select(epoch_microseconds(func.now()))

# One statement writes every match, both requests of each and its `match.proposed`
# event. The pairs arrive as two comma-separated id lists: one text parameter each,
# because adapting 50,000-element arrays client side costs more than the whole write.
# A pair becomes a match only when both of its requests were still pending (HAVING
# count = 2); the claim above guarantees that. The grouping carries the pair's request
# ids and pool (the same for both rows) rather than aggregating them: array and text
# aggregates cost more than the rest of the grouping. Relaxed pairs (two adjacent
# difficulties) come first and carry the match's difficulty in a third list, which is
# shorter: unnest pads it with NULLs for the exact pairs after them.
# SQL text, the one statement of the sweep kept so: four data-modifying CTEs (an UPDATE
# from a UNION ALL of the pairs, an INSERT grouped with FILTER aggregates, an outbox
# INSERT joining jsonb objects under a CASE) spell out longer in Core than this SQL,
# and Core would buy no speed here: built once, a Core statement runs as fast as the
# same SQL text.
WRITE_MATCHES = text(
    """
    WITH pairs AS (
        SELECT
            gen_random_uuid() AS match_id, p.request_a, p.request_b,
            nullif(p.difficulty, '') AS difficulty
        FROM unnest(
            CAST(string_to_array(:requests_a, ',') AS uuid[]),
            CAST(string_to_array(:requests_b, ',') AS uuid[]),
            string_to_array(:difficulties, ',')
        ) AS p(request_a, request_b, difficulty)
    ),
    claimed AS (
        UPDATE match_requests r
        SET status = 'matched', match_id = s.match_id
        FROM (
            SELECT match_id, request_a, request_b, difficulty, request_a AS request_id,
                   true AS older
            FROM pairs
            UNION ALL
            SELECT match_id, request_a, request_b, difficulty, request_b, false FROM pairs
        ) AS s
        WHERE r.id = s.request_id AND r.status = 'pending'
        RETURNING s.match_id, s.request_a, s.request_b, s.older, r.user_id, r.topic,
                  coalesce(s.difficulty, r.difficulty) AS difficulty, r.difficulty AS asked
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
            :proposed_type,
            jsonb_build_object(
                'match_id', c.id,
                'users', jsonb_build_array(c.user_a, c.user_b),
                'difficulty', c.difficulty,
                'topic', c.topic,
                'confirm_deadline', c.confirm_deadline
            )
            || CASE
                WHEN c.id IN (SELECT match_id FROM pairs WHERE difficulty IS NOT NULL)
                THEN jsonb_build_object(
                    'relaxed', true,
                    'difficulties', (
                        SELECT jsonb_agg(k.asked ORDER BY k.older DESC)
                        FROM claimed k WHERE k.match_id = c.id
                    )
                )
                ELSE CAST('{}' AS jsonb)
            END
        FROM created c
    )
    SELECT count(*) FROM created
    """
).bindparams(proposed_type=checked_event_type("match.proposed"))


@dataclass(frozen=True)
class RelaxedMatch:
    """Two requests of adjacent difficulties to pair, oldest first, at `difficulty`."""

    request_a: str
    request_b: str
    difficulty: str


@dataclass(frozen=True)
class Pairing:
    """What one claim paired: within pools, and across adjacent ones of a topic."""

    exact: list[Paired]
    relaxed: list[RelaxedMatch]

    @property
    def claimed(self) -> int:
        """Requests row-locked by the claim."""
        return sum(len(queue.request_ids) for queue, _ in self.exact)


@dataclass(frozen=True)
class SweepOutcome:
    """What one sweep did: matches created, requests it row-locked to make them, the
    topics of pools another sweep held, and for how many seconds the youngest
    transaction holding such a pool had been open."""

    matched: int
    claimed: int
    held_topics: tuple[str, ...] = ()
    held_for: float = 0.0

    @property
    def busy(self) -> bool:
        """Whether a pool was held by another sweep and skipped."""
        return bool(self.held_topics)


class PeerSweepResult(TaskResult):
    """Matches proposed by the sweep; a sweep of every pool proposes none itself and says
    into how many `shares` of topics it fanned out."""

    matched: int
    shares: NotRequired[int]


def waiting_topics(
    session: Session, difficulty: str | None, relax_after: int | None = None
) -> dict[str, int]:
    """Topics a sweep of every pool (of `difficulty`, when given) has work in, and how
    many pending requests each holds for it.

    A topic has work when a pool of it has two or more pending requests; with
    `relax_after` seconds (and no `difficulty`: a sweep of one difficulty never relaxes)
    also when the oldest request of a pool has waited longer than that and an adjacent
    difficulty of the topic has a pending request, however few either pool holds. A
    quiet topic's lone Easy and lone Medium are thus swept once one of them is overdue,
    by whichever sweep of every pool comes next (beat's safety tick at the latest).
    """
    if relax_after is None or difficulty is not None:
        topics: dict[str, int] = {}
        for row in session.connection().execute(SWEEPABLE_POOLS, {"difficulty": difficulty}):
            topics[row.topic] = topics.get(row.topic, 0) + row.waiting
        return topics
    pools: dict[str, dict[str, tuple[int, bool]]] = {}
    rows = session.connection().execute(
        POOLS_WITH_OVERDUE, {"difficulty": None, "relax_after": relax_after}
    )
    for row in rows:
        pools.setdefault(row.topic, {})[row.difficulty] = (row.waiting, row.overdue)
    return {
        topic: sum(waiting for waiting, _ in levels.values())
        for topic, levels in pools.items()
        if _has_work(levels)
    }


def _has_work(levels: Mapping[str, tuple[int, bool]]) -> bool:
    """Whether a topic's pools (difficulty: pending count, oldest overdue) hold a pair:
    one within a pool, or an overdue request with someone of an adjacent difficulty."""
    return any(
        waiting >= 2
        or (overdue and any(adjacent(level, other) for other in levels if other != level))
        for level, (waiting, overdue) in levels.items()
    )


def pending_in_topics(session: Session, topics: Sequence[str]) -> dict[str, int]:
    """Pending requests of each of `topics` that has any."""
    rows = session.connection().execute(PENDING_IN_TOPICS, {"topics": list(topics)})
    return {row.topic: row.waiting for row in rows}


def sweep_topics(
    sessions: sessionmaker[Session],
    *,
    topics: Sequence[str],
    difficulty: str | None,
    max_open_matches: int,
    confirm_seconds: int,
    stale_after: int,
    relax_after: int | None = None,
) -> SweepOutcome:
    """Pair the pending requests of the topics' pools (or only their pools of `difficulty`).

    Oldest first within a pool, never a user with themself, never two users one of whom
    declined the other within the cooldown, never beyond `max_open_matches` matches
    awaiting confirmation. A pool another sweep holds is skipped (`busy`). Reservations
    of the cap older than `stale_after` seconds are ignored (see the module docstring).
    With `relax_after` seconds, requests that waited longer and found nobody in their
    pool may be paired across adjacent difficulties of their topic
    (domain.peer.relaxation); a sweep of one difficulty never relaxes.
    """
    relaxing = relax_after is not None and difficulty is None
    with sessions.begin() as session:
        pools = (
            session.connection()
            .execute(
                LOCK_POOLS,
                {
                    "topics": list(topics),
                    "difficulty": difficulty,
                    "fewest": fewest_waiting(relaxing),
                },
            )
            .all()
        )
        waiting = {(row.difficulty, row.topic): row.waiting for row in pools if row.locked}
        held = [(row.difficulty, row.topic) for row in pools if not row.locked]
        held_topics = tuple(sorted({topic for _, topic in held}))
        held_for = held_longest_for(session, held) if held else 0.0
        wanted = pairs_wanted(waiting, relaxing)
        if not wanted:
            return SweepOutcome(0, 0, held_topics, held_for)
        reservation = reserve(sessions, wanted, max_open_matches, stale_after)
        if reservation is None:
            return SweepOutcome(0, 0, held_topics, held_for)
        try:
            pairing = claim_and_pair(
                session, waiting, reservation, relax_after if relaxing else None
            )
            created = write_matches(session, pairing.exact, confirm_seconds, pairing.relaxed)
            release_in(session, reservation)
        except BaseException:
            release(sessions, reservation)
            raise
        if created:
            relay_due(session)
    return SweepOutcome(created, pairing.claimed, held_topics, held_for)


def held_longest_for(session: Session, pools: Sequence[Pool]) -> float:
    """Seconds the youngest transaction holding one of `pools` has been open (0 when
    none still holds one): how long a busy pool has been busy, at least."""
    held_for = session.connection().scalar(
        POOLS_HELD_FOR,
        {"difficulties": [difficulty for difficulty, _ in pools], "topics": [t for _, t in pools]},
    )
    return float(held_for or 0.0)


def fewest_waiting(relaxing: bool) -> int:
    """The fewest pending requests of a pool that a sweep takes it with: one alone has
    nobody in its pool, but may find someone next door when relaxation is on."""
    return 1 if relaxing else 2


def pairs_wanted(waiting: Mapping[Pool, int], relaxing: bool) -> int:
    """How many pairs a sweep of pools with these pending counts asks the cap for: every
    pool's pairs at most, or with relaxation, a pair for every two requests at most."""
    wanted = sum(size // 2 for size in waiting.values())
    if relaxing:
        wanted = max(wanted, sum(waiting.values()) // 2)
    return wanted


def claim_and_pair(
    session: Session,
    waiting: dict[Pool, int],
    reservation: Reservation,
    relax_after: int | None = None,
) -> Pairing:
    """Claim the oldest requests of each pool the reservation can pair, and pair them:
    within pools first, then (with `relax_after`) what is left across adjacent ones."""
    rows = (
        session.connection()
        .execute(
            CLAIM_POOLS,
            {
                "difficulties": [difficulty for difficulty, _ in waiting],
                "topics": [topic for _, topic in waiting],
                "limits": claim_limits(waiting, reservation.pairs, CLAIM_SLACK),
            },
        )
        .all()
    )
    queues = [
        PoolQueue(
            (row.difficulty, row.topic),
            row.request_ids.split(","),
            list(map(int, row.user_ids.split(","))),
            list(map(int, row.created_us.split(","))),
        )
        for row in rows
    ]
    if not queues:
        return Pairing([], [])
    declined = recent_declines(session, [user for queue in queues for user in queue.user_ids])
    return pair_claimed(
        queues,
        declined,
        reservation.pairs,
        relax_after,
        lambda: int(session.connection().scalar(NOW_US) or 0),
    )


def pair_claimed(
    queues: Sequence[PoolQueue],
    declined: Container[UserPair],
    pairs: int,
    relax_after: int | None,
    now_us: Callable[[], int],
) -> Pairing:
    """Pair claimed queues as a sweep does: within pools, keeping the `pairs` oldest
    pairs; then, with `relax_after` and room left, what they leave across adjacent
    difficulties. `now_us` reads the clock only when relaxation has room."""
    exact = oldest_pairs(pair_queues(queues, declined), pairs)
    room = pairs - pair_count(exact)
    if relax_after is None or room <= 0:
        return Pairing(exact, [])
    leftovers = [unpaired(each) for each in exact]
    relaxed = relax_pairs(leftovers, declined, now_us(), relax_after * 1_000_000)[:room]
    return Pairing(
        exact,
        [
            RelaxedMatch(
                leftovers[pair.older.queue].request_ids[pair.older.position],
                leftovers[pair.newer.queue].request_ids[pair.newer.position],
                pair.difficulty,
            )
            for pair in relaxed
        ],
    )


def unpaired(paired: Paired) -> PoolQueue:
    """The requests of a queue that its pairs left waiting, in their order."""
    queue, pairs = paired
    taken = {position for pair in pairs for position in pair}
    kept = [position for position in range(len(queue.request_ids)) if position not in taken]
    return PoolQueue(
        queue.pool,
        [queue.request_ids[position] for position in kept],
        [queue.user_ids[position] for position in kept],
        [queue.created_us[position] for position in kept],
    )


def write_matches(
    session: Session,
    paired: list[Paired],
    confirm_seconds: int,
    relaxed: Sequence[RelaxedMatch] = (),
) -> int:
    """Create a match per pair, mark both requests matched, emit `match.proposed`
    (with `relaxed` and both requests' difficulties for a relaxed pair)."""
    if not pair_count(paired) and not relaxed:
        return 0
    # Relaxed pairs first: only they carry a difficulty of their own.
    requests_a = [match.request_a for match in relaxed]
    requests_a.extend(queue.request_ids[older] for queue, pairs in paired for older, _ in pairs)
    requests_b = [match.request_b for match in relaxed]
    requests_b.extend(queue.request_ids[newer] for queue, pairs in paired for _, newer in pairs)
    created = session.scalar(
        WRITE_MATCHES,
        {
            "requests_a": ",".join(requests_a),
            "requests_b": ",".join(requests_b),
            "difficulties": ",".join(match.difficulty for match in relaxed),
            "confirm_seconds": confirm_seconds,
        },
    )
    return int(created or 0)
