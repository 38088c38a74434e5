"""`reservation_stats`: invitation and match counts per reservation, rebuilt in one statement."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.db import rowcount
from domain.carpool.locking import lock_carpool_links

# How a full rebuild counts, from measurements on 1M reservations and 3M invitations:
# hashing a million groups per count took 10-12 s; merging counts read in key order off
# the indexes took 3.5 s, but 26 s once deletions had cleared the visibility map (the
# index-only scans turn into heap fetches in index order); sorting sequential scans and
# merging took 5-7 s in both states. So the counts group by `column + 0`, which no index
# serves, and the full rebuild switches hashing off for its transaction. Index scans stay
# allowed: the foreign-key check of every inserted row needs them.
FULL_REBUILD_SETTINGS = {"enable_hashagg": "off", "enable_hashjoin": "off", "work_mem": "256MB"}


def _rebuild_statement(only_given: bool) -> str:
    # The same statement for all reservations or a given few; for a few, every
    # aggregate is restricted to them so the cost follows the ids, not the tables.
    def only(column: str) -> str:
        return f"WHERE {column} = ANY(CAST(:ids AS bigint[]))" if only_given else ""

    def also(column: str) -> str:
        return f"AND {column} = ANY(CAST(:ids AS bigint[]))" if only_given else ""

    return f"""
        WITH targets AS (
            SELECT id FROM reservations {only("id")}
        ),
        sent AS (
            SELECT reservation_id + 0 AS id, count(*) AS n
            FROM invitations {only("reservation_id")} GROUP BY 1
        ),
        received AS (
            SELECT offer_id + 0 AS id, count(*) AS n
            FROM invitations {only("offer_id")} GROUP BY 1
        ),
        matched AS (
            -- A match row counts once for each reservation it names; a row naming the
            -- same reservation on both sides counts once for it.
            SELECT id, count(*) AS n FROM (
                SELECT reservation_id + 0 AS id FROM reservation_matches {only("reservation_id")}
                UNION ALL
                SELECT matched_reservation_id + 0 FROM reservation_matches
                WHERE matched_reservation_id <> reservation_id {also("matched_reservation_id")}
            ) sides
            GROUP BY id
        )
        INSERT INTO reservation_stats AS s
            (reservation_id, invite_sent, invite_received, matches, modified_on)
        SELECT t.id, coalesce(sent.n, 0), coalesce(received.n, 0), coalesce(matched.n, 0), now()
        FROM targets t
        LEFT JOIN sent ON sent.id = t.id
        LEFT JOIN received ON received.id = t.id
        LEFT JOIN matched ON matched.id = t.id
        ON CONFLICT (reservation_id) DO UPDATE SET
            invite_sent = excluded.invite_sent,
            invite_received = excluded.invite_received,
            matches = excluded.matches,
            modified_on = excluded.modified_on
        -- Rows whose counts are right are left alone: a rebuild writes only what changed.
        WHERE (s.invite_sent, s.invite_received, s.matches)
            IS DISTINCT FROM (excluded.invite_sent, excluded.invite_received, excluded.matches)
    """


def rebuild_stats(session: Session, reservation_ids: Collection[int] | None = None) -> int:
    """Rewrite `reservation_stats` for the given reservations (all when None); returns rows written.

    `invite_sent` counts invitations the reservation sent (`invitations.reservation_id`),
    `invite_received` those it received (`invitations.offer_id`), and `matches` the
    `reservation_matches` rows naming it on either side. A missing row is created; a row
    whose counts change gets them with `modified_on = now()`; a row already right is not
    written, so `modified_on` says when its counts last changed. Ids of reservations that
    do not exist are ignored. Holds the carpool lock (see `domain.carpool.locking`; a cleanup
    calling this already holds it, and the lock is reentrant within a transaction).
    """
    if reservation_ids is not None and not reservation_ids:
        return 0
    lock_carpool_links(session)
    if reservation_ids is None:
        # set_config(…, true) is SET LOCAL: the settings end with this transaction.
        settings = ", ".join(
            f"set_config('{k}', '{v}', true)" for k, v in FULL_REBUILD_SETTINGS.items()
        )
        session.execute(text(f"SELECT {settings}"))
        result = session.execute(text(_rebuild_statement(only_given=False)))
    else:
        result = session.execute(
            text(_rebuild_statement(only_given=True)), {"ids": sorted(set(reservation_ids))}
        )
    return rowcount(result)
