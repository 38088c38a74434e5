"""Peer sweep: 100,000 pending requests over 200 pools paired by one `peer.sweep`, next
to the same sweep on one connection and to the one-request-at-a-time way (look up a
partner, pair, commit, next request).

`python -m bench.peer_sweep` (scratch database `matchops_bench_peer` on DATABASE_URL's
server). Goal: the whole 100,000 in under 2 s, with a statement count that does not
grow with the number of requests. Sweep times are the median of a few runs, each on
freshly built data, because one run on a small shared machine varies by a quarter.
"""

from __future__ import annotations

import os
import statistics

# The cap on open matches would stop the sweep at 5,000; the bench measures the pairing.
# Set before anything reads the settings.
os.environ["MAX_CONCURRENT_MATCHES"] = "10000000"

from typing import Any

from sqlalchemy import Connection, text

from bench.harness import (
    autocommit_connection,
    count_statements,
    peak_memory_mb,
    report,
    timed,
    use_bench_database,
)
from core.db import session_factory
from core.outbox import emit_event
from core.settings import get_settings
from domain.peer.sweep import sweep
from workers.app import app, load_tasks

REQUESTS = 100_000
POOLS = 200
# Pairs of users, next to each other in their pool, one of whom declined the other:
# the sweep has to step around them.
DECLINES = 2_000
# The small run that shows the statement count does not depend on the data size.
SMALL_REQUESTS = 1_000
# Sweeps timed per variant; each gets freshly built data.
RUNS = 3
# The one-at-a-time baseline walks the requests of this many pools; its rate is what
# it would keep up over the whole data set.
BASELINE_POOLS = 4


def build_data(conn: Connection, requests: int) -> None:
    """Users, their pending requests spread over the pools (oldest first), and declines."""
    conn.exec_driver_sql("TRUNCATE outbox, collab_sessions, matches, match_requests CASCADE")
    conn.exec_driver_sql("TRUNCATE peer_declines, users CASCADE")
    conn.execute(
        text(
            "INSERT INTO users (id, email, display_name, role) "
            "SELECT g, 'bench' || g || '@example.test', 'Bench ' || g, 'member' "
            "FROM generate_series(1, :n) AS g"
        ),
        {"n": requests},
    )
    conn.execute(
        text(
            "INSERT INTO match_requests (user_id, difficulty, topic, created_at) "
            "SELECT g, (ARRAY['Easy', 'Medium', 'Hard'])[1 + (g % :pools) % 3], "
            "       'topic-' || lpad((g % :pools)::text, 3, '0'), "
            "       now() - make_interval(secs => :n - g) "
            "FROM generate_series(1, :n) AS g"
        ),
        {"n": requests, "pools": POOLS},
    )
    conn.execute(
        text(
            "INSERT INTO peer_declines (user_low, user_high) "
            "SELECT g, g + :pools FROM generate_series(1, :d) AS g WHERE g + :pools <= :n"
        ),
        {"pools": POOLS, "d": DECLINES, "n": requests},
    )
    conn.exec_driver_sql("VACUUM ANALYZE users, match_requests, peer_declines, matches, outbox")
    # Flush the load's dirty pages now, so the timed run does not pay for writing them.
    conn.exec_driver_sql("CHECKPOINT")


def reset_to_pending(conn: Connection) -> None:
    """The same data again: every request pending, no matches, no events."""
    conn.exec_driver_sql("TRUNCATE outbox, collab_sessions, matches")
    conn.exec_driver_sql(
        "UPDATE match_requests SET status = 'pending', match_id = NULL, requeued_at = NULL"
    )
    conn.exec_driver_sql("VACUUM ANALYZE match_requests, matches, outbox")
    conn.exec_driver_sql("CHECKPOINT")


def audit(conn: Connection) -> dict[str, int]:
    """What the sweep left: matches, paired requests, and anything paired twice."""
    return dict(
        conn.execute(
            text(
                "SELECT "
                " (SELECT count(*) FROM matches) AS matches, "
                " (SELECT count(*) FROM match_requests WHERE status = 'matched') AS matched, "
                " (SELECT count(*) FROM (SELECT request_a FROM matches "
                "   UNION ALL SELECT request_b FROM matches) s) "
                " - (SELECT count(DISTINCT r) FROM (SELECT request_a AS r FROM matches "
                "   UNION ALL SELECT request_b FROM matches) s) AS paired_twice, "
                " (SELECT count(*) FROM matches m JOIN peer_declines d "
                "   ON d.user_low = least(m.user_a, m.user_b) "
                "  AND d.user_high = greatest(m.user_a, m.user_b)) AS declined_pairs, "
                " (SELECT count(*) FROM outbox WHERE type = 'match.proposed') AS events"
            )
        )
        .one()
        ._mapping
    )


def sweep_once() -> tuple[dict[str, Any], int, float]:
    """One `peer.sweep` over every pool, through the task's own code path."""
    with count_statements() as statements, timed() as timing:
        result: dict[str, Any] = app.tasks["peer.sweep"].apply(kwargs={}).get()
    return result, statements.value, timing.seconds


def sweep_on_one_connection() -> float:
    """The same sweep with one lane (PEER_SWEEP_LANES=1): its seconds."""
    settings = get_settings()
    with timed() as timing:
        sweep(
            session_factory(),
            difficulty=None,
            topic=None,
            max_open_matches=settings.max_concurrent_matches,
            confirm_seconds=settings.confirm_match_timeout_seconds,
            lanes=1,
        )
    return timing.seconds


def spread(seconds: list[float]) -> str:
    """`median s (min-max over n runs)`."""
    return (
        f"{statistics.median(seconds):.2f} s "
        f"({min(seconds):.2f}-{max(seconds):.2f} over {len(seconds)} runs)"
    )


def pair_one_at_a_time(request_id: Any, confirm_seconds: int) -> bool:
    """The baseline: one request, its partner looked up, the pair written, one commit."""
    with session_factory().begin() as session:
        request = session.execute(
            text(
                "SELECT id, user_id, difficulty, topic FROM match_requests "
                "WHERE id = :id AND status = 'pending' FOR UPDATE SKIP LOCKED"
            ),
            {"id": request_id},
        ).one_or_none()
        if request is None:
            return False
        partner = session.execute(
            text(
                "SELECT id, user_id FROM match_requests p "
                "WHERE p.difficulty = :difficulty AND p.topic = :topic "
                "  AND p.status = 'pending' AND p.id <> :id AND p.user_id <> :user_id "
                "  AND NOT EXISTS (SELECT 1 FROM peer_declines d "
                "    WHERE d.user_low = least(p.user_id, :user_id) "
                "      AND d.user_high = greatest(p.user_id, :user_id) "
                "      AND d.declined_at > now() - interval '1 hour') "
                "ORDER BY p.created_at, p.id LIMIT 1 FOR UPDATE SKIP LOCKED"
            ),
            dict(request._mapping),
        ).one_or_none()
        if partner is None:
            return False
        match = session.execute(
            text(
                "INSERT INTO matches (user_a, user_b, difficulty, topic, confirm_deadline, "
                "  request_a, request_b) "
                "VALUES (:user_a, :user_b, :difficulty, :topic, "
                "  now() + make_interval(secs => :confirm), :request_a, :request_b) "
                "RETURNING id, confirm_deadline"
            ),
            {
                "user_a": request.user_id,
                "user_b": partner.user_id,
                "difficulty": request.difficulty,
                "topic": request.topic,
                "confirm": confirm_seconds,
                "request_a": request.id,
                "request_b": partner.id,
            },
        ).one()
        session.execute(
            text(
                "UPDATE match_requests SET status = 'matched', match_id = :match "
                "WHERE id IN (:a, :b) AND status = 'pending'"
            ),
            {"match": match.id, "a": request.id, "b": partner.id},
        )
        emit_event(
            session,
            "match.proposed",
            {
                "match_id": match.id,
                "users": [request.user_id, partner.user_id],
                "difficulty": request.difficulty,
                "topic": request.topic,
                "confirm_deadline": match.confirm_deadline,
            },
        )
    return True


def baseline(conn: Connection) -> tuple[int, int, int, float]:
    """Walk the sample pools' requests oldest first; returns (requests, paired, statements, s)."""
    sample = [
        row.id
        for row in conn.execute(
            text(
                "SELECT id FROM match_requests "
                "WHERE topic IN (SELECT DISTINCT topic FROM match_requests "
                "                ORDER BY topic LIMIT :pools) "
                "ORDER BY created_at, id"
            ),
            {"pools": BASELINE_POOLS},
        )
    ]
    paired = 0
    with count_statements() as statements, timed() as timing:
        for request_id in sample:
            paired += 2 * pair_one_at_a_time(request_id, 120)
    return len(sample), paired, statements.value, timing.seconds


def bare_update_seconds(conn: Connection) -> float:
    """A reference for this server: one UPDATE marking every request matched, undone.

    Any sweep has to write at least this much, so it bounds how fast one can be here.
    """
    with timed() as timing:
        conn.exec_driver_sql("BEGIN")
        conn.exec_driver_sql(
            "UPDATE match_requests SET status = 'matched', match_id = gen_random_uuid()"
        )
        conn.exec_driver_sql("ROLLBACK")
    return timing.seconds


def main() -> None:
    """Build the data, sweep it, rebuild it, walk a sample of it one request at a time."""
    use_bench_database("matchops_bench_peer")
    load_tasks()
    lanes = get_settings().peer_sweep_lanes
    with autocommit_connection() as conn:
        build_data(conn, SMALL_REQUESTS)
        small_result, small_statements, small_seconds = sweep_once()

        memory_before = peak_memory_mb()
        seconds: list[float] = []
        for _ in range(RUNS):
            build_data(conn, REQUESTS)
            result, statements, run_seconds = sweep_once()
            seconds.append(run_seconds)
        memory_after = peak_memory_mb()
        checked = audit(conn)
        one_lane: list[float] = []
        for _ in range(RUNS):
            build_data(conn, REQUESTS)
            one_lane.append(sweep_on_one_connection())

        reset_to_pending(conn)
        floor = bare_update_seconds(conn)
        sampled, baseline_paired, baseline_statements, baseline_seconds = baseline(conn)

    paired = 2 * result["matched"]
    rate = paired / statistics.median(seconds)
    baseline_rate = baseline_paired / baseline_seconds
    report(
        f"peer.sweep: {REQUESTS:,} pending requests over {POOLS} pools, one call",
        [
            ("matches created", f"{result['matched']:,} ({paired:,} requests paired)"),
            ("time", f"{spread(seconds)} (goal < 2 s)"),
            ("lanes (PEER_SWEEP_LANES)", f"{lanes}"),
            ("the same sweep on one connection", spread(one_lane)),
            (
                "reference: one bare UPDATE of the requests",
                f"{floor:.2f} s (what one connection must write at least, on this server now)",
            ),
            ("requests paired per second", f"{rate:,.0f}"),
            ("statements", f"{statements} (5, and 2 per lane)"),
            (
                f"statements at {SMALL_REQUESTS:,} requests",
                f"{small_statements} ({small_result['matched']} matches in {small_seconds:.2f} s, "
                "one lane)",
            ),
            (
                "peak memory (process)",
                f"{memory_after:.0f} MiB (+{memory_after - memory_before:.0f})",
            ),
            (
                "paired twice / declined pairs matched",
                f"{checked['paired_twice']} / {checked['declined_pairs']}",
            ),
            ("match.proposed events", f"{checked['events']:,}"),
        ],
    )
    report(
        "one request at a time (look up a partner, pair, commit)",
        [
            ("sample", f"{sampled:,} requests of {BASELINE_POOLS} pools, the same data"),
            ("requests paired", f"{baseline_paired:,} in {baseline_seconds:.2f} s"),
            ("requests paired per second", f"{baseline_rate:,.0f}"),
            (
                "statements",
                f"{baseline_statements:,} ({baseline_statements / sampled:.1f} per request)",
            ),
            ("whole data set at this rate", f"{paired / baseline_rate:.1f} s (extrapolated)"),
            ("sweep speed-up", f"{rate / baseline_rate:.0f}x"),
        ],
    )


if __name__ == "__main__":
    main()
