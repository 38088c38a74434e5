"""Mentorship: the optimal assignment next to a greedy one, and the statistics rebuild next
to a per-relationship recount.

`python -m bench.mentorship` (scratch database `matchops_bench_mentorship` on
DATABASE_URL's server). Goals: `mentorship.assign` of 5,000 seeking mentees to 1,000
mentors with capacity 1-5 and 50 scores per mentee under 5 s; `mentorship.rebuild_stats`
over 1,000,000 bookings under 10 s.
"""

from __future__ import annotations

from datetime import datetime
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
from core.settings import get_settings
from domain.mentorship.assignment import Candidates, find_candidates
from models.mentorship import BookingStatus
from workers.app import app, load_tasks

MENTORS = 1_000
SEEKING_MENTEES = 5_000
SCORES_PER_MENTEE = 50

STATS_MENTORS = 2_000
STATS_MENTEES = 100_000  # one relationship each
BOOKINGS = 1_000_000
# The per-relationship recount runs on this many relationships; its cost per
# relationship is then scaled to all of them.
BASELINE_SAMPLE = 2_000


def build_assignment_data(conn: Connection) -> None:
    """Mentors 1..1,000 (capacity 1-5), seeking mentees 1,001..6,000, 50 scores each."""
    conn.execute(
        text(
            "INSERT INTO users (id, email, display_name, role, max_mentees, date_joined) "
            "SELECT g, 'mentor' || g || '@example.test', 'Mentor ' || g, 'mentor', "
            "       1 + (g * 7) % 5, timestamptz '2024-01-01' + g * interval '1 minute' "
            "FROM generate_series(CAST(1 AS bigint), :n) g"
        ),
        {"n": MENTORS},
    )
    conn.execute(
        text(
            "INSERT INTO users (id, email, display_name, role, seeking_mentor, date_joined) "
            "SELECT :m + g, 'mentee' || g || '@example.test', 'Mentee ' || g, 'mentee', true, "
            "       timestamptz '2024-06-01' + g * interval '1 minute' "
            "FROM generate_series(CAST(1 AS bigint), :n) g"
        ),
        {"m": MENTORS, "n": SEEKING_MENTEES},
    )
    # k * 97 mod 1000 is distinct for k < 1000 (97 is coprime with 1000): 50 different
    # mentors per mentee. setseed makes the scores the same on every run.
    conn.execute(text("SELECT setseed(0.2026)"))
    conn.execute(
        text(
            "INSERT INTO scores (mentee_id, mentor_id, score) "
            "SELECT :m + e, 1 + (e * 31 + k * 97) % :m, round(random()::numeric, 4) "
            "FROM generate_series(CAST(1 AS bigint), :n) e, generate_series(0, :per - 1) k"
        ),
        {"m": MENTORS, "n": SEEKING_MENTEES, "per": SCORES_PER_MENTEE},
    )


def greedy_total(candidates: Candidates) -> tuple[int, float]:
    """Best score first: each pair taken if its mentee is free and its mentor has room."""
    room = dict(candidates.room)
    taken: set[int] = set()
    total = 0.0
    pairs = zip(
        candidates.mentee_ids.tolist(),
        candidates.mentor_ids.tolist(),
        candidates.scores.tolist(),
        strict=True,
    )
    for mentee_id, mentor_id, score in sorted(pairs, key=lambda p: p[2], reverse=True):
        if mentee_id in taken or room[mentor_id] <= 0:
            continue
        taken.add(mentee_id)
        room[mentor_id] -= 1
        total += score
    return len(taken), total


def bench_assign(conn: Connection) -> None:
    with timed() as build:
        build_assignment_data(conn)
        conn.exec_driver_sql("VACUUM ANALYZE")
    with session_factory().begin() as session:
        candidates = find_candidates(session, default_capacity=get_settings().max_mentees)
    slots = conn.scalar(text("SELECT sum(max_mentees) FROM users WHERE role = 'mentor'"))
    with timed() as greedy:
        greedy_assigned, greedy_score = greedy_total(candidates)
    with timed() as run, count_statements() as statements:
        result: dict[str, Any] = app.tasks["mentorship.assign"].apply(kwargs={}).get()
    again = app.tasks["mentorship.assign"].apply(kwargs={}).get()
    over = conn.scalar(
        text(
            "SELECT count(*) FROM (SELECT u.id FROM users u JOIN mentor_mentee mm "
            "ON mm.mentor_id = u.id AND mm.status = 'active' "
            "GROUP BY u.id, u.max_mentees HAVING count(*) > u.max_mentees) o"
        )
    )
    gain = result["total_score"] - greedy_score
    report(
        "mentorship.assign: 5,000 seeking mentees, 1,000 mentors (capacity 1-5), 50 scores each",
        [
            (
                "data",
                f"{SEEKING_MENTEES:,} mentees, {MENTORS:,} mentors with {slots:,} places, "
                f"{candidates.scores.size:,} scored pairs (built in {build.seconds:.1f} s)",
            ),
            (
                "assign",
                f"{run.seconds:.2f} s, {statements.value} statements, one transaction (goal < 5 s)",
            ),
            (
                "optimal total score",
                f"{result['total_score']:.4f} with {result['assigned']:,} mentees assigned",
            ),
            (
                "greedy total score",
                f"{greedy_score:.4f} with {greedy_assigned:,} mentees assigned "
                f"(best score first, {greedy.seconds:.2f} s on the same pairs)",
            ),
            ("optimal - greedy", f"{gain:+.4f} ({100 * gain / greedy_score:+.2f}%)"),
            ("second run", f"{again['assigned']} assigned (nothing left to match)"),
            ("mentors over capacity", f"{over}"),
        ],
    )


def build_stats_data(conn: Connection) -> None:
    """100,000 relationships and 1,000,000 bookings (about 5% for pairs with no relationship)."""
    base_mentor, base_mentee = 1_000_000, 2_000_000
    conn.execute(
        text(
            "INSERT INTO users (id, email, display_name, role) "
            "SELECT :b + g, 'smentor' || g || '@example.test', 'Mentor', 'mentor' "
            "FROM generate_series(CAST(1 AS bigint), :n) g"
        ),
        {"b": base_mentor, "n": STATS_MENTORS},
    )
    conn.execute(
        text(
            "INSERT INTO users (id, email, display_name, role) "
            "SELECT :b + g, 'smentee' || g || '@example.test', 'Mentee', 'mentee' "
            "FROM generate_series(CAST(1 AS bigint), :n) g"
        ),
        {"b": base_mentee, "n": STATS_MENTEES},
    )
    conn.execute(
        text(
            "INSERT INTO mentor_mentee (mentor_id, mentee_id, status, initiated_by, accepted_at) "
            "SELECT :bm + 1 + e % :mentors, :be + e, "
            "       CASE WHEN e % 10 = 0 THEN 'completed' ELSE 'active' END, 'mentee', now() "
            "FROM generate_series(CAST(1 AS bigint), :n) e"
        ),
        {"bm": base_mentor, "be": base_mentee, "mentors": STATS_MENTORS, "n": STATS_MENTEES},
    )
    # Booking g belongs to mentee 1 + g % n and, for 19 of 20 bookings, to that mentee's
    # mentor; the rest go to a neighbouring mentor with no relationship.
    conn.execute(
        text(
            "INSERT INTO bookings (mentor_id, mentee_id, status, booked_date) "
            "SELECT :bm + 1 + (e + CASE WHEN g % 20 = 0 THEN 1 ELSE 0 END) % :mentors, :be + e, "
            "       (ARRAY['pending', 'confirmed', 'completed', 'completed', 'cancelled'])"
            "[1 + (g * 7) % 5], "
            "       timestamptz '2025-01-01' + ((g * 7919) % 8760) * interval '1 hour' "
            "FROM (SELECT g, 1 + g % :n AS e FROM generate_series(CAST(1 AS bigint), :b) g) s"
        ),
        {
            "bm": base_mentor,
            "be": base_mentee,
            "mentors": STATS_MENTORS,
            "n": STATS_MENTEES,
            "b": BOOKINGS,
        },
    )


def per_relationship_rebuild(conn: Connection, relationship_ids: list[int]) -> None:
    """The row-at-a-time way: per relationship, fetch its bookings, count, upsert (autocommit)."""
    for rid in relationship_ids:
        mentor_id, mentee_id = conn.execute(
            text("SELECT mentor_id, mentee_id FROM mentor_mentee WHERE id = :r"), {"r": rid}
        ).one()
        bookings = conn.execute(
            text(
                "SELECT status, booked_date FROM bookings WHERE mentor_id = :m AND mentee_id = :e"
            ),
            {"m": mentor_id, "e": mentee_id},
        ).all()
        held: list[datetime] = [
            b.booked_date for b in bookings if b.status != BookingStatus.CANCELLED
        ]
        counts = {
            s: sum(b.status == s for b in bookings)
            for s in (BookingStatus.COMPLETED, BookingStatus.CONFIRMED)
        }
        conn.execute(
            text(
                "INSERT INTO mentor_mentee_stats (relationship_id, total_bookings, "
                "completed_sessions, confirmed_sessions, pending_sessions, cancelled_sessions, "
                "first_session_date, last_session_date) "
                "VALUES (:r, :t, :c, :f, :p, :x, :first, :last) "
                "ON CONFLICT (relationship_id) DO UPDATE SET total_bookings = :t, "
                "completed_sessions = :c, confirmed_sessions = :f, pending_sessions = :p, "
                "cancelled_sessions = :x, first_session_date = :first, last_session_date = :last"
            ),
            {
                "r": rid,
                "t": len(bookings),
                "c": counts[BookingStatus.COMPLETED],
                "f": counts[BookingStatus.CONFIRMED],
                "p": sum(b.status == BookingStatus.PENDING for b in bookings),
                "x": sum(b.status == BookingStatus.CANCELLED for b in bookings),
                "first": min(held, default=None),
                "last": max(held, default=None),
            },
        )


def bench_rebuild(conn: Connection) -> None:
    with timed() as build:
        build_stats_data(conn)
        conn.exec_driver_sql("VACUUM ANALYZE")
    rebuild = app.tasks["mentorship.rebuild_stats"]
    with timed() as first, count_statements() as statements:
        written: dict[str, int] = rebuild.apply(kwargs={}).get()
    with timed() as second:
        unchanged = rebuild.apply(kwargs={}).get()
    wrong = conn.scalar(
        text(
            "SELECT count(*) FROM mentor_mentee mm JOIN mentor_mentee_stats s "
            "ON s.relationship_id = mm.id WHERE mm.id % 97 = 0 AND "
            "(s.total_bookings, s.completed_sessions, s.cancelled_sessions) <> ("
            " SELECT count(*), count(*) FILTER (WHERE b.status = 'completed'),"
            "        count(*) FILTER (WHERE b.status = 'cancelled')"
            " FROM bookings b WHERE b.mentor_id = mm.mentor_id AND b.mentee_id = mm.mentee_id)"
        )
    )
    relationships = written["relationships"]
    ids = list(conn.scalars(text("SELECT id FROM mentor_mentee ORDER BY id")))
    sample = ids[:: max(1, len(ids) // BASELINE_SAMPLE)][:BASELINE_SAMPLE]
    with timed() as old:
        per_relationship_rebuild(conn, sample)
    per_relationship = old.seconds / len(sample)
    projected = per_relationship * relationships
    report(
        "mentorship.rebuild_stats: 1,000,000 bookings",
        [
            (
                "data",
                f"{BOOKINGS:,} bookings, {relationships:,} relationships "
                f"(built in {build.seconds:.1f} s)",
            ),
            (
                "first rebuild (inserts)",
                f"{first.seconds:.2f} s, {written['changed']:,} rows written, "
                f"{statements.value} statements (lock, work_mem, one upsert) (goal < 10 s)",
            ),
            (
                "second rebuild (no change)",
                f"{second.seconds:.2f} s, {unchanged['changed']} rows rewritten",
            ),
            ("spot check vs recount", f"{wrong} wrong of every 97th relationship"),
            (
                "per-relationship baseline",
                f"{per_relationship * 1000:.3f} ms per relationship, measured on a SAMPLE of "
                f"{len(sample):,} relationships (3 statements each, autocommit)",
            ),
            (
                "baseline projected",
                f"{projected:.0f} s for {relationships:,} relationships",
            ),
            ("ratio", f"set-based is {projected / first.seconds:.0f}x faster"),
        ],
    )


def main() -> None:
    """Build the data, run both measurements, print the figures."""
    use_bench_database("matchops_bench_mentorship")
    load_tasks()
    with autocommit_connection() as conn:
        bench_assign(conn)
        bench_rebuild(conn)
    print(f"\npeak memory of this process: {peak_memory_mb():.0f} MiB")


if __name__ == "__main__":
    main()
