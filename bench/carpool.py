"""Carpool: the statistics rebuild and a member leaving a large group, each next to the
row-by-row way the platform it replaces did it, and the periodic cleanup over the whole
table with members leaving while it runs.

`python -m bench.carpool [--scale F] [--only rebuild|member_left|cleanup]` (scratch
database `matchops_bench_carpool` on DATABASE_URL's server; `--scale 0.1` builds a
tenth of the data). Goals: `carpool.rebuild_stats` over 1,000,000 reservations and
3,000,000 invitations under 15 s; `carpool.member_left` in a 5,000-member group holding
50,000 invitations under 1 s; `carpool.cleanup_invitations` over the same 1,000,000
reservations in transactions short enough that a `member_left` waits for one of them
at most.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
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
from domain.carpool.sweep import clean_up_searching_reservations
from tasks.carpool import CleanupArgs
from workers.app import app, load_tasks


@dataclass(frozen=True)
class Sizes:
    """How much data the rebuild and the cleanup run over."""

    reservations: int = 1_000_000
    invitations: int = 3_000_000
    matches: int = 500_000
    users: int = 100_000

    def scaled(self, factor: float) -> Sizes:
        """The same shape, `factor` times as large."""
        return Sizes(*(max(10, int(count * factor)) for count in astuple(self)))


# Users of the cleanup's directory share a group of this many; every group's enterprise
# is in one carpool network, so links stay eligible except those of users in no group.
CLEANUP_GROUP_SIZE = 100
# One user in this many is in no group: their links are the ones the cleanup removes.
# Prime, so loners hold searching reservations as often as anyone (a reservation's
# status follows its id modulo 10).
CLEANUP_LONERS = 97
# How often a member leaves a group while the cleanup runs.
LEAVE_EVERY_SECONDS = 0.25
# The row-by-row rebuild recounts this many reservations; its cost per reservation is
# then scaled to the whole table.
BASELINE_SAMPLE = 2_000

GROUP_MEMBERS = 5_000
GROUP_INVITATIONS = 50_000
# The leaving member's share of the group's links.
HUB_SENT = 500
HUB_RECEIVED = 500
HUB_MATCHES = 100


@contextmanager
def bulk_loading(conn: Connection, *tables: str) -> Iterator[None]:
    """Drop the tables' secondary indexes and foreign keys for a load, then restore them.

    Building an index once and validating a foreign key in one pass is several times
    faster than maintaining both row by row over millions of inserts.
    """
    restore: list[str] = []
    for table in tables:
        for name, definition in conn.execute(
            text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = CAST(:t AS regclass) AND contype = 'f'"
            ),
            {"t": table},
        ):
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
            restore.append(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
        for name, definition in conn.execute(
            text(
                "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
                "FROM pg_index i WHERE i.indrelid = CAST(:t AS regclass) AND NOT i.indisprimary"
            ),
            {"t": table},
        ):
            conn.exec_driver_sql(f"DROP INDEX {name}")
            restore.insert(0, definition)  # indexes first: they speed up the key checks
    yield
    for statement in restore:
        conn.exec_driver_sql(statement)


def build_stats_data(conn: Connection, sizes: Sizes) -> None:
    """Users, reservations, invitations and matches for the full rebuild, set-based."""
    conn.execute(
        text(
            "INSERT INTO users (id, email, display_name, role) "
            "SELECT g, 'bench' || g || '@example.test', 'Bench ' || g, 'member' "
            "FROM generate_series(1::bigint, :n) g"
        ),
        {"n": sizes.users},
    )
    conn.execute(
        text(
            "INSERT INTO reservations (id, user_id, status) "
            "SELECT g, 1 + g % :users, CASE WHEN g % 10 < 7 THEN 'searching' ELSE 'matched' END "
            "FROM generate_series(1::bigint, :n) g"
        ),
        {"n": sizes.reservations, "users": sizes.users},
    )
    # Multiplying by a prime coprime with the table size spreads the receivers evenly.
    conn.execute(
        text(
            "INSERT INTO invitations (id, reservation_id, offer_id) "
            "SELECT g, 1 + g % :r, 1 + (g * 48271) % :r FROM generate_series(1::bigint, :n) g"
        ),
        {"n": sizes.invitations, "r": sizes.reservations},
    )
    conn.execute(
        text(
            "INSERT INTO reservation_matches (id, reservation_id, matched_reservation_id) "
            "SELECT g, 1 + (2 * g) % :r, 1 + (2 * g * 7919 + 1) % :r "
            "FROM generate_series(1::bigint, :n) g"
        ),
        {"n": sizes.matches, "r": sizes.reservations},
    )


def build_group(conn: Connection, copy: int) -> dict[str, int]:
    """A 5,000-member group with 50,000 invitations among its members' reservations.

    Member 0 leaves. Of the members their links reach, every fifth also shares a second
    group with them, and every fifth (shifted by one) is in an enterprise of the same
    carpool network as one of theirs: those links must survive.
    """
    base = 10_000_000 * (copy + 1)
    group, shared, ours, partners = base + 1, base + 2, base + 3, base + 4
    enterprise, partner_enterprise, network = base + 5, base + 6, base + 7
    params = {"base": base, "n": GROUP_MEMBERS}
    conn.execute(
        text(
            "INSERT INTO carpool_groups (id, name, enterprise_id) VALUES "
            "(:g, 'bench group', NULL), (:s, 'bench second group', NULL), "
            "(:o, 'bench enterprise group', :e), (:p, 'bench partner group', :pe)"
        ),
        {
            "g": group,
            "s": shared,
            "o": ours,
            "p": partners,
            "e": enterprise,
            "pe": partner_enterprise,
        },
    )
    conn.execute(
        text("INSERT INTO carpool_networks (network_id, enterprise_id) VALUES (:n, :e), (:n, :pe)"),
        {"n": network, "e": enterprise, "pe": partner_enterprise},
    )
    conn.execute(
        text(
            "INSERT INTO users (id, email, display_name, role) "
            "SELECT :base + k, 'bench' || (:base + k) || '@example.test', 'Bench', 'member' "
            "FROM generate_series(0, :n - 1) k"
        ),
        params,
    )
    conn.execute(
        text(
            "INSERT INTO group_members (group_id, user_id) "
            "SELECT :g, :base + k FROM generate_series(0, :n - 1) k "
            "UNION ALL SELECT :s, :base + k FROM generate_series(0, :n - 1) k WHERE k % 5 = 0 "
            "UNION ALL SELECT :o, :base "
            "UNION ALL SELECT :p, :base + k FROM generate_series(0, :n - 1) k WHERE k % 5 = 1"
        ),
        {**params, "g": group, "s": shared, "o": ours, "p": partners},
    )
    conn.execute(
        text(
            "INSERT INTO reservations (id, user_id, status) "
            "SELECT :base + k, :base + k, 'searching' FROM generate_series(0, :n - 1) k"
        ),
        params,
    )
    others = GROUP_INVITATIONS - HUB_SENT - HUB_RECEIVED
    conn.execute(
        text(
            "INSERT INTO invitations (id, reservation_id, offer_id) "
            "SELECT :base + k, :base, :base + k FROM generate_series(1::bigint, :sent) k "
            "UNION ALL SELECT :base + k, :base + k, :base "
            "FROM generate_series(:sent + 1, :sent + :received) k "
            "UNION ALL SELECT :base + :sent + :received + g, "
            "       :base + 1 + g % (:n - 1), :base + 1 + (g * 7919) % (:n - 1) "
            "FROM generate_series(1::bigint, :others) g"
        ),
        {**params, "sent": HUB_SENT, "received": HUB_RECEIVED, "others": others},
    )
    conn.execute(
        text(
            "INSERT INTO reservation_matches (id, reservation_id, matched_reservation_id) "
            "SELECT :base + k, :base + 1000 + k, :base FROM generate_series(1::bigint, :m) k"
        ),
        {**params, "m": HUB_MATCHES},
    )
    return {"group_id": group, "user_id": base}


def old_rebuild_stats(conn: Connection, reservation_ids: list[int]) -> None:
    """The replaced platform: three counts and an upsert per reservation, autocommitted."""
    for rid in reservation_ids:
        p = {"r": rid}
        sent = conn.scalar(text("SELECT count(*) FROM invitations WHERE reservation_id = :r"), p)
        received = conn.scalar(text("SELECT count(*) FROM invitations WHERE offer_id = :r"), p)
        matches = conn.scalar(
            text(
                "SELECT count(*) FROM reservation_matches "
                "WHERE reservation_id = :r OR matched_reservation_id = :r"
            ),
            p,
        )
        conn.execute(
            text(
                "INSERT INTO reservation_stats "
                "(reservation_id, invite_sent, invite_received, matches, modified_on) "
                "VALUES (:r, :s, :i, :m, now()) ON CONFLICT (reservation_id) DO UPDATE SET "
                "invite_sent = :s, invite_received = :i, matches = :m, modified_on = now()"
            ),
            {"r": rid, "s": sent, "i": received, "m": matches},
        )


OLD_ELIGIBLE = text(
    """
    SELECT EXISTS (
        SELECT 1
        FROM group_members a JOIN carpool_groups ga ON ga.id = a.group_id
        JOIN group_members b ON b.user_id = :v AND b.status = 'active'
        JOIN carpool_groups gb ON gb.id = b.group_id
        WHERE a.user_id = :u AND a.status = 'active' AND NOT ga.disabled AND NOT gb.disabled
          AND (ga.id = gb.id OR EXISTS (
              SELECT 1 FROM carpool_networks na JOIN carpool_networks nb USING (network_id)
              WHERE na.enterprise_id = ga.enterprise_id AND nb.enterprise_id = gb.enterprise_id))
    )
    """
)


def old_member_left(conn: Connection, group_id: int, user_id: int) -> dict[str, int]:
    """The replaced platform: walk the group member by member, reservation by reservation,
    invitation by invitation, then recount statistics per reservation; no transaction."""
    conn.execute(
        text("UPDATE group_members SET status = 'left' WHERE group_id = :g AND user_id = :u"),
        {"g": group_id, "u": user_id},
    )
    mine = list(
        conn.scalars(text("SELECT id FROM reservations WHERE user_id = :u"), {"u": user_id})
    )
    members = conn.scalars(
        text("SELECT user_id FROM group_members WHERE group_id = :g"), {"g": group_id}
    ).all()
    touched: set[int] = set()
    removed = {"invitations": 0, "matches": 0}
    links = (
        ("invitations", "reservation_id", "offer_id"),
        ("reservation_matches", "reservation_id", "matched_reservation_id"),
    )
    for member in members:
        if member == user_id:
            continue
        theirs = conn.scalars(
            text("SELECT id FROM reservations WHERE user_id = :m"), {"m": member}
        ).all()
        for reservation in theirs:
            for table, left, right in links:
                rows = conn.execute(
                    text(
                        f"SELECT id, {left}, {right} FROM {table} "
                        f"WHERE ({left} = :r AND {right} = ANY(:mine)) "
                        f"OR ({right} = :r AND {left} = ANY(:mine))"
                    ),
                    {"r": reservation, "mine": mine},
                ).all()
                for row_id, a, b in rows:
                    if conn.scalar(OLD_ELIGIBLE, {"u": user_id, "v": member}):
                        continue
                    conn.execute(text(f"DELETE FROM {table} WHERE id = :id"), {"id": row_id})
                    removed["invitations" if table == "invitations" else "matches"] += 1
                    touched.update((a, b))
    old_rebuild_stats(conn, sorted(touched))
    return removed


def build_bulk_data(conn: Connection, sizes: Sizes) -> float:
    """The rebuild's and the cleanup's data, once; returns the seconds it took."""
    with timed() as build:
        with bulk_loading(conn, "reservations", "invitations", "reservation_matches"):
            build_stats_data(conn, sizes)
        build_directory(conn, sizes)
        conn.exec_driver_sql("VACUUM ANALYZE")
    return build.seconds


def bench_rebuild(conn: Connection, sizes: Sizes, built_seconds: float) -> None:
    rebuild = app.tasks["carpool.rebuild_stats"]
    # Cold: reservation_stats is empty, every row is inserted.
    with timed() as cold, count_statements() as cold_statements:
        cold_written = rebuild.apply(kwargs={}).get()["reservations_written"]
    # Steady state: every count is already right, nothing is written.
    with timed() as steady:
        steady_written = rebuild.apply(kwargs={}).get()["reservations_written"]
    # One invitation in a hundred withdrawn: only the reservations it named change.
    conn.execute(text("DELETE FROM invitations WHERE id % 100 = 0"))
    with timed() as changed:
        changed_written = rebuild.apply(kwargs={}).get()["reservations_written"]
    wrong = conn.scalar(
        text(
            "SELECT count(*) FROM reservation_stats s WHERE s.reservation_id % 997 = 0 AND "
            "(s.invite_sent, s.invite_received, s.matches) <> ("
            " (SELECT count(*) FROM invitations WHERE reservation_id = s.reservation_id),"
            " (SELECT count(*) FROM invitations WHERE offer_id = s.reservation_id),"
            " (SELECT count(*) FROM reservation_matches WHERE reservation_id = s.reservation_id"
            "  OR matched_reservation_id = s.reservation_id))"
        )
    )
    sample = list(range(1, sizes.reservations + 1, max(1, sizes.reservations // BASELINE_SAMPLE)))
    with timed() as old:
        old_rebuild_stats(conn, sample)
    per_reservation = old.seconds / len(sample)
    projected = per_reservation * sizes.reservations
    report(
        f"carpool.rebuild_stats: {sizes.reservations:,} reservations, "
        f"{sizes.invitations:,} invitations",
        [
            (
                "data",
                f"{sizes.reservations:,} reservations, {sizes.invitations:,} invitations, "
                f"{sizes.matches:,} matches (built in {built_seconds:.1f} s)",
            ),
            (
                "cold rebuild (empty stats)",
                f"{cold.seconds:.2f} s, {cold_written:,} rows inserted, "
                f"{cold_statements.value} statements in all, the counting and writing one "
                "INSERT … SELECT … ON CONFLICT  (goal < 15 s)",
            ),
            (
                "rebuild, nothing changed",
                f"{steady.seconds:.2f} s, {steady_written:,} rows written",
            ),
            (
                "rebuild, 1% invitations gone",
                f"{changed.seconds:.2f} s, {changed_written:,} rows written",
            ),
            ("spot check vs recount", f"{wrong} wrong of every 997th reservation"),
            (
                "row-by-row baseline",
                f"{per_reservation * 1000:.3f} ms per reservation, measured on "
                f"a sample of {len(sample):,} reservations (4 statements each, autocommit)",
            ),
            ("baseline projected", f"{projected:.0f} s for {sizes.reservations:,} reservations"),
            ("speed-up (vs cold rebuild)", f"{projected / cold.seconds:.0f}x"),
        ],
    )


def bench_member_left(conn: Connection) -> None:
    ours, theirs = build_group(conn, 0), build_group(conn, 1)
    conn.exec_driver_sql("VACUUM ANALYZE")
    with timed() as fast, count_statements() as statements:
        result: dict[str, Any] = app.tasks["carpool.member_left"].apply(kwargs=ours).get()
    with timed() as old:
        removed = old_member_left(conn, theirs["group_id"], theirs["user_id"])
    report(
        "carpool.member_left: a member of a 5,000-member group with 50,000 invitations",
        [
            (
                "leaving member's links",
                f"{HUB_SENT} sent and {HUB_RECEIVED} received invitations, "
                f"{HUB_MATCHES} matches; 40% still justified by a second group or the network",
            ),
            (
                "member_left",
                f"{fast.seconds * 1000:.1f} ms, {statements.value} statements, "
                f"one transaction  (goal < 1 s)",
            ),
            (
                "removed",
                f"{result['invitations_removed']} invitations, "
                f"{result['matches_removed']} matches, {result['reservations_touched']} "
                "reservations' statistics rebuilt",
            ),
            (
                "row-by-row baseline",
                f"{old.seconds * 1000:.0f} ms on an identical group (full run: "
                f"removed {removed['invitations']} invitations, {removed['matches']} matches)",
            ),
            ("speed-up", f"{old.seconds / fast.seconds:.0f}x"),
        ],
    )


def build_directory(conn: Connection, sizes: Sizes) -> None:
    """Groups of the bulk data's users, all in one carpool network, and some loners."""
    groups = sizes.users // CLEANUP_GROUP_SIZE + 1
    conn.execute(
        text(
            "INSERT INTO carpool_groups (id, name, enterprise_id) "
            "SELECT g, 'bulk group ' || g, g FROM generate_series(1, :groups) g"
        ),
        {"groups": groups},
    )
    conn.execute(
        text(
            "INSERT INTO carpool_networks (network_id, enterprise_id) "
            "SELECT 1, g FROM generate_series(1, :groups) g"
        ),
        {"groups": groups},
    )
    conn.execute(
        text(
            "INSERT INTO group_members (group_id, user_id) "
            "SELECT 1 + u / :size, u FROM generate_series(1, :users) u WHERE u % :loners <> 0"
        ),
        {"size": CLEANUP_GROUP_SIZE, "users": sizes.users, "loners": CLEANUP_LONERS},
    )


@dataclass
class Leaving:
    """`member_left` calls made while the cleanup runs: when each started and ended."""

    calls: list[tuple[float, float]]
    stop: threading.Event

    @property
    def seconds(self) -> list[float]:
        """Each call's latency."""
        return [end - start for start, end in self.calls]

    def batches_waited(self, commits: list[float]) -> list[int]:
        """For each call, how many cleanup batches committed while it ran: a call that
        waits for one batch sees its commit; the next batch waits for the call."""
        return [
            bisect.bisect_left(commits, end) - bisect.bisect_right(commits, start)
            for start, end in self.calls
        ]


def leave_repeatedly(leaving: Leaving, sizes: Sizes) -> None:
    """Members leave their group one by one, each `member_left` timed, until told to stop."""
    task = app.tasks["carpool.member_left"]
    user = 1
    while not leaving.stop.wait(LEAVE_EVERY_SECONDS):
        user = user % (sizes.users - 1) + 1
        if user % CLEANUP_LONERS == 0:
            user += 1
        start = time.perf_counter()
        task.apply(kwargs={"group_id": 1 + user // CLEANUP_GROUP_SIZE, "user_id": user}).get()
        leaving.calls.append((start, time.perf_counter()))
        user += 7919  # another part of the table each time


def bench_cleanup(conn: Connection, sizes: Sizes) -> None:
    """The whole-table cleanup in batches, with members leaving their groups meanwhile."""
    batch = CleanupArgs().batch_size
    searching = conn.scalar(text("SELECT count(*) FROM reservations WHERE status = 'searching'"))
    commits: list[float] = []
    leaving = Leaving([], threading.Event())
    leaver = threading.Thread(target=leave_repeatedly, args=(leaving, sizes))
    leaver.start()
    try:
        with timed() as whole, count_statements() as statements:
            commits.append(time.perf_counter())
            result = clean_up_searching_reservations(
                session_factory(), batch, lambda _done, _total: commits.append(time.perf_counter())
            )
    finally:
        leaving.stop.set()
        leaver.join()
    # Progress is reported after each batch's commit, so the gaps are the transactions
    # (with the few statements that start the next one).
    transactions = [later - earlier for earlier, later in itertools.pairwise(commits)]
    waited = leaving.batches_waited(commits[1:])
    report(
        f"carpool.cleanup_invitations: {searching:,} searching reservations of "
        f"{sizes.reservations:,}, with members leaving meanwhile",
        [
            (
                "cleanup",
                f"{whole.seconds:.1f} s, {result['batches']:,} transactions of {batch:,} "
                f"reservations, {statements.value:,} statements",
            ),
            (
                "removed",
                f"{result['invitations_removed']:,} invitations, "
                f"{result['matches_removed']:,} matches",
            ),
            ("longest transaction", milliseconds(transactions)),
            (
                "member_left while it ran",
                f"{len(leaving.calls)} calls; {milliseconds(leaving.seconds)}",
            ),
            (
                "batches committed during one member_left",
                f"at most {max(waited, default=0)} ({waited.count(0)} calls saw none, "
                f"{waited.count(1)} one)  (goal: at most 1)",
            ),
        ],
    )


def milliseconds(seconds: list[float]) -> str:
    """`longest N ms (median M ms)`."""
    if not seconds:
        return "none"
    return (
        f"longest {max(seconds) * 1000:.0f} ms (median {statistics.median(seconds) * 1000:.0f} ms)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="data size, 1.0 = full")
    parser.add_argument("--only", choices=("rebuild", "member_left", "cleanup"))
    return parser.parse_args()


def main() -> None:
    """Build the data, run the measurements, print the figures."""
    options = parse_args()
    sizes = Sizes().scaled(options.scale)
    use_bench_database("matchops_bench_carpool")
    load_tasks()
    with autocommit_connection() as conn:
        if options.only in (None, "rebuild", "cleanup"):
            built = build_bulk_data(conn, sizes)
        if options.only in (None, "rebuild"):
            bench_rebuild(conn, sizes, built)
        if options.only in (None, "cleanup"):
            bench_cleanup(conn, sizes)
        if options.only in (None, "member_left"):
            bench_member_left(conn)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\npeak memory of this process: {peak_memory_mb():.0f} MiB")
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min) at the end")


if __name__ == "__main__":
    main()
