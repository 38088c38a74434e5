"""Peer sweep: 100,000 pending requests over 200 pools, swept by one `peer.sweep` fanned
out over two worker processes, measured until every topic's sweep has committed; the
same backlog under the default cap of 5,000 open matches (how many requests a sweep
row-locks for the pairs it may make); and the one-request-at-a-time way (look up a
partner, pair, commit, next request) as the baseline.

`python -m bench.peer_sweep [--requests N] [--runs N]` (scratch database
`matchops_bench_peer` on DATABASE_URL's server). Goal: the whole 100,000 in under 2 s.
Sweep times are the median of a few runs, each on freshly built data, because one run
on a small shared machine varies by a quarter.
"""

from __future__ import annotations

import os
import statistics

# The cap on open matches would stop the sweep at 5,000; the timed runs measure the
# pairing, the capped run sets it back. Set before anything reads the settings.
os.environ["MAX_CONCURRENT_MATCHES"] = "10000000"

import argparse
from typing import Any

from sqlalchemy import Connection, Row, text

from bench.harness import (
    autocommit_connection,
    count_statements,
    processes,
    report,
    timed,
    use_bench_database,
    wait_for_workers,
    worker_argv,
)
from core.db import session_factory
from core.outbox import emit_event
from core.settings import get_settings
from domain.peer.pairing import pair_pool
from domain.peer.rules import DECLINE_COOLDOWN_SECONDS
from domain.peer.shares import MAX_SHARES, split_topics
from domain.peer.sweep import sweep_topics, waiting_topics
from runtime.polling import poll_until
from workers.app import app

REQUESTS = 100_000
POOLS = 200
# Pairs of users, next to each other in their pool, one of whom declined the other:
# the sweep has to step around them.
DECLINES = 2_000
DEFAULT_CAP = 5_000
UNCAPPED = int(os.environ["MAX_CONCURRENT_MATCHES"])
# How often the bench looks whether the sweep is done, and how long it waits at most
# (a worker that died mid-sweep would leave it waiting forever).
POLL_SECONDS = 0.01
SWEEP_TIMEOUT_SECONDS = 120
# Whether it is: the fan-out and every share it sent have recorded their outcome in the
# task ledger, which each does after its last commit. A few rows to read, where counting
# the matches every 10 ms scanned up to 50,000 rows and, on two cores, took CPU from the
# sweep it watched (1.84 s against 1.76 s, medians of five runs side by side).
SWEEP_RUNS = text(
    """
    SELECT
        (SELECT CAST(result->>'shares' AS int) FROM task_runs
         WHERE task_id = :fan_out AND finished_at IS NOT NULL) AS shares,
        (SELECT count(*) FROM task_runs
         WHERE name = 'peer.sweep' AND task_id <> :fan_out AND accepted_at >= :since
           AND finished_at IS NOT NULL) AS finished
    """
)
# Declines the sweep steps around, as it reads them.
RECENT_DECLINES_SQL = (
    "SELECT user_low, user_high FROM peer_declines "
    f"WHERE declined_at > now() - interval '{DECLINE_COOLDOWN_SECONDS} seconds'"
)
# Reads of the fan-out timed per variant, one after the other.
FAN_OUT_ROUNDS = 20
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


# What no sweep may leave, summed over the runs: each run is a sweep of its own.
FAULTS = ("paired_twice", "declined_pairs")


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


def expected_matches(conn: Connection) -> int:
    """What the pairing rule makes of the pending requests: the sweep is done at this count."""
    rows = conn.execute(
        text(
            "SELECT difficulty, topic, array_agg(user_id ORDER BY created_at, id) AS users "
            "FROM match_requests WHERE status = 'pending' GROUP BY difficulty, topic"
        )
    ).all()
    declined = {tuple(row) for row in conn.execute(text(RECENT_DECLINES_SQL))}
    return sum(len(pair_pool(row.users, declined)) for row in rows)


def fanned_out_sweep(conn: Connection, expected: int) -> float:
    """Send one `peer.sweep` of every pool; seconds until all its shares committed."""
    since = conn.scalar(text("SELECT clock_timestamp()"))
    with timed() as timing:
        fan_out = app.send_task("peer.sweep").id
        runs: list[Row[Any]] = []

        def committed() -> bool:
            runs[:] = [conn.execute(SWEEP_RUNS, {"fan_out": fan_out, "since": since}).one()]
            return runs[0].shares is not None and runs[0].finished >= runs[0].shares

        if not poll_until(committed, SWEEP_TIMEOUT_SECONDS, interval=POLL_SECONDS):
            raise RuntimeError(
                f"peer.sweep {fan_out} did not finish within {SWEEP_TIMEOUT_SECONDS} s: "
                f"{runs[0].finished} of its shares ({runs[0].shares} sent) recorded an outcome"
            )
    matches = conn.scalar(text("SELECT count(*) FROM matches"))
    if matches != expected:
        raise RuntimeError(f"the sweep made {matches} matches, {expected} expected")
    return timing.seconds


def sweep_in_process(cap: int, shares: int) -> tuple[int, int, int, float]:
    """Every pool swept in this process, in `shares` transactions one after the other:
    (matches, requests row-locked, statements, seconds)."""
    settings = get_settings()
    matched = claimed = 0
    with count_statements() as statements, timed() as timing:
        with session_factory().begin() as session:
            waiting = waiting_topics(session, None)
        for share in split_topics(waiting, max_shares=shares):
            done = sweep_topics(
                session_factory(),
                topics=share,
                difficulty=None,
                max_open_matches=cap,
                confirm_seconds=settings.confirm_match_timeout_seconds,
                stale_after=settings.task_time_limit,
            )
            matched, claimed = matched + done.matched, claimed + done.claimed
    return matched, claimed, statements.value, timing.seconds


def fan_out_reads(relax_after: int, rounds: int = FAN_OUT_ROUNDS) -> tuple[float, float]:
    """Median seconds of the fan-out's read of topics with work, without relaxation and
    with it (every pool's oldest wait compared with `relax_after`), interleaved."""
    plain: list[float] = []
    relaxing: list[float] = []
    for _ in range(rounds):
        for seconds, relax in ((plain, None), (relaxing, relax_after)):
            with session_factory().begin() as session, timed() as timing:
                waiting_topics(session, None, relax)
            seconds.append(timing.seconds)
    return statistics.median(plain), statistics.median(relaxing)


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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--runs", type=int, default=RUNS)
    return parser.parse_args()


def main() -> None:
    """Build the data, sweep it through workers, sweep it under the cap, walk a sample."""
    options = parse_args()
    use_bench_database("matchops_bench_peer")
    seconds: list[float] = []
    floors: list[float] = []
    faults: dict[str, int] = {}
    with (
        autocommit_connection() as conn,
        processes(
            env={"COMMIT_TRIGGERS": "false"},
            sweeper=worker_argv("sweeper", "-Q", "sweeps", "-c", "2"),
        ) as children,
    ):
        wait_for_workers(children, "sweeper")
        for _ in range(options.runs):
            build_data(conn, options.requests)
            expected = expected_matches(conn)
            seconds.append(fanned_out_sweep(conn, expected))
            checked = audit(conn)
            faults = {key: faults.get(key, 0) + checked[key] for key in FAULTS}
            # The machine's speed drifts from minute to minute: each sweep gets its own
            # yardstick, measured right after it.
            reset_to_pending(conn)
            floors.append(bare_update_seconds(conn))

    with autocommit_connection() as conn:
        build_data(conn, options.requests)
        plain_read, relaxing_read = fan_out_reads(relax_after=30)
        _, _, one_statements, one_seconds = sweep_in_process(UNCAPPED, shares=1)
        build_data(conn, options.requests)
        capped, locked, capped_statements, capped_seconds = sweep_in_process(
            DEFAULT_CAP, shares=MAX_SHARES
        )
        reset_to_pending(conn)
        sampled, baseline_paired, baseline_statements, baseline_seconds = baseline(conn)

    ratios = [sweep / floor for sweep, floor in zip(seconds, floors, strict=True)]
    paired = 2 * checked["matches"]
    rate = paired / statistics.median(seconds)
    baseline_rate = baseline_paired / baseline_seconds
    report(
        f"peer.sweep: {options.requests:,} pending requests over {POOLS} pools, one call",
        [
            ("matches created", f"{checked['matches']:,} ({paired:,} requests paired)"),
            (
                "time until every topic's sweep committed",
                f"{spread(seconds)} (goal < 2 s; fanned out, two worker processes)",
            ),
            (
                "the same, every pool in one transaction",
                f"{one_seconds:.2f} s, {one_statements} statements",
            ),
            (
                "reference: one bare UPDATE of the requests",
                f"{spread(floors)}, one after each sweep (what one connection must write "
                "at least, on this server now)",
            ),
            (
                "each sweep against its reference",
                ", ".join(f"{ratio:.2f}x" for ratio in ratios)
                + f" (median {statistics.median(ratios):.2f}x)",
            ),
            ("requests paired per second", f"{rate:,.0f}"),
            (
                "the fan-out's read of topics with work, without / with relaxation",
                f"{plain_read * 1000:.1f} ms / {relaxing_read * 1000:.1f} ms "
                f"({relaxing_read / plain_read:.2f}x; medians of {FAN_OUT_ROUNDS} interleaved)",
            ),
            (
                "paired twice / declined pairs matched",
                f"{faults['paired_twice']} / {faults['declined_pairs']} "
                f"(over all {options.runs} runs)",
            ),
            ("match.proposed events", f"{checked['events']:,}"),
        ],
    )
    report(
        f"the same backlog under the default cap of {DEFAULT_CAP:,} open matches",
        [
            ("matches created", f"{capped:,} ({2 * capped:,} requests paired)"),
            (
                "requests row-locked by the claims",
                f"{locked:,} ({locked / max(2 * capped, 1):.2f}x the requests paired)",
            ),
            (
                "time, shares one after the other",
                f"{capped_seconds:.2f} s, {capped_statements} statements",
            ),
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
