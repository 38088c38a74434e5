"""Fairness figures per peer pool: who waits, for how long, and how requests leave.

One function, `pool_figures`, feeds `matchops pools`, the demo's summary and the
metrics endpoint alike, so they never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

# The window the figures of leaving requests (matched, expired) look back over, unless
# told otherwise: long enough to smooth a quiet pool, short enough to show today.
DEFAULT_WINDOW_SECONDS = 3600

# Every pool with a pending request, a match or an expiry in the window. Time to match
# is per request (created → its match proposed), so both sides of a match count, each
# in the pool it waited in. Matches are read by time through their BRIN index, the
# expiries through the partial index on expired requests, the waiting through the
# pending pool index.
POOL_FIGURES = text(
    """
    WITH waiting AS (
        SELECT difficulty, topic, count(*) AS waiting,
               extract(epoch FROM now() - min(created_at)) AS oldest_wait_seconds
        FROM match_requests
        WHERE status = 'pending'
        GROUP BY difficulty, topic
    ),
    matched AS (
        SELECT r.difficulty, r.topic, count(*) AS matched,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY s.seconds) AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY s.seconds) AS p95
        FROM matches m
        CROSS JOIN LATERAL (VALUES (m.request_a), (m.request_b)) AS side(request_id)
        JOIN match_requests r ON r.id = side.request_id
        CROSS JOIN LATERAL (
            SELECT extract(epoch FROM m.created_at - r.created_at) AS seconds
        ) AS s
        WHERE m.created_at > now() - make_interval(secs => :window)
        GROUP BY r.difficulty, r.topic
    ),
    expired AS (
        SELECT difficulty, topic, count(*) AS expired
        FROM match_requests
        WHERE status = 'expired' AND expired_at > now() - make_interval(secs => :window)
        GROUP BY difficulty, topic
    )
    SELECT difficulty, topic,
           coalesce(w.waiting, 0) AS waiting, w.oldest_wait_seconds,
           coalesce(m.matched, 0) AS matched, m.p50, m.p95,
           coalesce(e.expired, 0) AS expired
    FROM waiting w
    FULL JOIN matched m USING (difficulty, topic)
    FULL JOIN expired e USING (difficulty, topic)
    ORDER BY difficulty, topic
    """
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
    rows = session.execute(POOL_FIGURES, {"window": window_seconds})
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
