"""Fairness figures per peer pool: who waits, for how long, and how requests leave.

One function, `pool_figures`, feeds `matchops pools` and the demo's summary. The metrics
endpoint (`api.series`) reads the same two row sets, `WAITING_POOLS` and
`MATCHED_SIDES`, so a pool's waiting count, oldest wait and times to match mean the
same thing in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import (
    BindParameter,
    and_,
    bindparam,
    column,
    func,
    literal_column,
    select,
    true,
    values,
)
from sqlalchemy.orm import Session
from sqlalchemy.types import Uuid

from core.sql import epoch_seconds, seconds_before_now
from models.peer import Match, MatchRequest, RequestStatus

# The window the figures of leaving requests (matched, expired) look back over, unless
# told otherwise: long enough to smooth a quiet pool, short enough to show today.
DEFAULT_WINDOW_SECONDS = 3600

# Every pool with a pending request: how many wait, and since when the oldest.
WAITING_POOLS = (
    select(
        MatchRequest.difficulty,
        MatchRequest.topic,
        func.count().label("waiting"),
        func.min(MatchRequest.created_at).label("oldest"),
    )
    .where(MatchRequest.status == RequestStatus.PENDING)
    .group_by(MatchRequest.difficulty, MatchRequest.topic)
    .subquery("pools")
)

# Each side of every match a sweep proposed, in the pool its request waited in, with
# its time to match (request created → match proposed). A match stays when it is
# declined or expires, so a request requeued and matched again counts twice, and
# counts drawn from these rows only grow.
_SIDE = (
    values(column("request_id", Uuid), name="side")
    .data([(Match.request_a,), (Match.request_b,)])
    .lateral()
)
MATCHED_SIDES = (
    select(
        MatchRequest.difficulty,
        MatchRequest.topic,
        Match.created_at.label("matched_at"),
        epoch_seconds(Match.created_at - MatchRequest.created_at).label("seconds"),
    )
    .select_from(Match)
    .join(_SIDE, true())
    .join(MatchRequest, MatchRequest.id == _SIDE.c.request_id)
    .subquery("sides")
)

_WINDOW: BindParameter[int] = bindparam("window")
_WAITING = select(
    WAITING_POOLS.c.difficulty,
    WAITING_POOLS.c.topic,
    WAITING_POOLS.c.waiting,
    epoch_seconds(func.now() - WAITING_POOLS.c.oldest).label("oldest_wait_seconds"),
).cte("waiting")
_MATCHED = (
    select(
        MATCHED_SIDES.c.difficulty,
        MATCHED_SIDES.c.topic,
        func.count().label("matched"),
        func.percentile_cont(0.5).within_group(MATCHED_SIDES.c.seconds).label("p50"),
        func.percentile_cont(0.95).within_group(MATCHED_SIDES.c.seconds).label("p95"),
    )
    .where(MATCHED_SIDES.c.matched_at > seconds_before_now(_WINDOW))
    .group_by(MATCHED_SIDES.c.difficulty, MATCHED_SIDES.c.topic)
    .cte("matched")
)
_EXPIRED = (
    select(MatchRequest.difficulty, MatchRequest.topic, func.count().label("expired"))
    .where(
        MatchRequest.status == RequestStatus.EXPIRED,
        MatchRequest.expired_at > seconds_before_now(_WINDOW),
    )
    .group_by(MatchRequest.difficulty, MatchRequest.topic)
    .cte("expired")
)
# The pool of a row of the two full joins, as `FULL JOIN … USING` would merge it.
_DIFFICULTY = func.coalesce(_WAITING.c.difficulty, _MATCHED.c.difficulty)
_TOPIC = func.coalesce(_WAITING.c.topic, _MATCHED.c.topic)

# Every pool with a pending request, a match or an expiry in the window. Matches are
# read by time through their BRIN index, the expiries through the partial index on
# expired requests, the waiting through the pending pool index.
POOL_FIGURES = (
    select(
        func.coalesce(_DIFFICULTY, _EXPIRED.c.difficulty).label("difficulty"),
        func.coalesce(_TOPIC, _EXPIRED.c.topic).label("topic"),
        func.coalesce(_WAITING.c.waiting, 0).label("waiting"),
        _WAITING.c.oldest_wait_seconds,
        func.coalesce(_MATCHED.c.matched, 0).label("matched"),
        _MATCHED.c.p50,
        _MATCHED.c.p95,
        func.coalesce(_EXPIRED.c.expired, 0).label("expired"),
    )
    .select_from(
        _WAITING.outerjoin(
            _MATCHED,
            and_(
                _WAITING.c.difficulty == _MATCHED.c.difficulty,
                _WAITING.c.topic == _MATCHED.c.topic,
            ),
            full=True,
        ).outerjoin(
            _EXPIRED,
            and_(_EXPIRED.c.difficulty == _DIFFICULTY, _EXPIRED.c.topic == _TOPIC),
            full=True,
        )
    )
    .order_by(literal_column("difficulty"), literal_column("topic"))
)


@dataclass(frozen=True)
class PoolFigures:
    """One pool's figures: waiting now, and requests that left it within the window."""

    difficulty: str
    topic: str
    waiting: int
    oldest_wait_seconds: float | None  # None when nobody waits
    matched: int  # requests of the pool proposed a match within the window
    expired: int  # requests of the pool expired within the window
    time_to_match_p50: float | None  # seconds; None without a match in the window
    time_to_match_p95: float | None

    @property
    def expiry_rate(self) -> float | None:
        """Share of the requests that left the pool within the window by expiring."""
        left = self.matched + self.expired
        return self.expired / left if left else None


def pool_figures(
    session: Session, window_seconds: int = DEFAULT_WINDOW_SECONDS
) -> list[PoolFigures]:
    """Every active pool's figures, by difficulty then topic (one statement)."""
    rows = session.connection().execute(POOL_FIGURES, {"window": window_seconds})
    return [
        PoolFigures(
            difficulty=row.difficulty,
            topic=row.topic,
            waiting=int(row.waiting),
            oldest_wait_seconds=rounded_seconds(row.oldest_wait_seconds),
            matched=int(row.matched),
            expired=int(row.expired),
            time_to_match_p50=rounded_seconds(row.p50),
            time_to_match_p95=rounded_seconds(row.p95),
        )
        for row in rows
    ]


def rounded_seconds(value: Decimal | float | None) -> float | None:
    """Seconds as read from the database, to the millisecond, or None."""
    return None if value is None else round(float(value), 3)
