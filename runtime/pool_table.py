"""The pool figures as a text table, for `matchops pools` and the demo's summary."""

from __future__ import annotations

from collections.abc import Sequence

from domain.peer.stats import PoolFigures

HEADER = (
    "difficulty",
    "topic",
    "waiting",
    "oldest",
    "matched",
    "p50",
    "p95",
    "expired",
    "expiry rate",
)


def pool_table(figures: Sequence[PoolFigures]) -> str:
    """One line per pool under a header; times in seconds, the expiry rate in percent."""
    rows = [HEADER] + [
        (
            pool.difficulty,
            pool.topic,
            str(pool.waiting),
            _seconds(pool.oldest_wait_seconds),
            str(pool.matched),
            _seconds(pool.time_to_match_p50),
            _seconds(pool.time_to_match_p95),
            str(pool.expired),
            "-" if pool.expiry_rate is None else f"{pool.expiry_rate:.0%}",
        )
        for pool in figures
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADER))]
    # Text columns left-aligned, figures right-aligned.
    return "\n".join(
        "  ".join(
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"
