"""Fairness figures per peer pool: who waits, for how long, and how requests leave.

One function, `pool_figures`, feeds `matchops pools` and the demo's summary. The metrics
endpoint (`core.metrics`) reads the same two row sets, `WAITING_POOLS` and
`MATCHED_SIDES`, so a pool's waiting count, oldest wait and times to match mean the
same thing in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

# The window the figures of leaving requests (matched, expired) look back over, unless
# told otherwise: long enough to smooth a quiet pool, short enough to show today.
DEFAULT_WINDOW_SECONDS = 3600

# Every pool with a pending request: how many wait, and since when the oldest.
WAITING_POOLS = """
    SELECT difficulty, topic, count(*) AS waiting, min(created_at) AS oldest
    FROM match_requests
    WHERE status = 'pending'
    GROUP BY difficulty, topic
"""

# Each side of every match a sweep proposed, in the pool its request waited in, with
# its time to match (request created → match proposed). A match stays when it is
# declined or expires, so a request requeued and matched again counts twice, and
# counts drawn from these rows only grow.
MATCHED_SIDES = """
    SELECT r.difficulty, r.topic, m.created_at AS matched_at,
           extract(epoch FROM m.created_at - r.created_at) AS seconds
    FROM matches m
    CROSS JOIN LATERAL (VALUES (m.request_a), (m.request_b)) AS side(request_id)
    JOIN match_requests r ON r.id = side.request_id
"""

# Every pool with a pending request, a match or an expiry in the window. Matches are
# read by time through their BRIN index, the expiries through the partial index on
# expired requests, the waiting through the pending pool index.
POOL_FIGURES = text(
    f"""
    WITH waiting AS (
        SELECT difficulty, topic, waiting,
               extract(epoch FROM now() - oldest) AS oldest_wait_seconds
        FROM ({WAITING_POOLS}) AS pools
    ),
    matched AS (
        SELECT difficulty, topic, count(*) AS matched,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds) AS p95
        FROM ({MATCHED_SIDES}) AS sides
        WHERE matched_at > now() - make_interval(secs => :window)
        GROUP BY difficulty, topic
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
