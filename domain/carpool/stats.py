"""`reservation_stats`: invitation and match counts per reservation, rebuilt in one statement."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import (
    CTE,
    ColumnElement,
    Insert,
    any_,
    func,
    literal_column,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.sql import id_array, set_local
from domain.carpool.locking import lock_carpool_links
from models.carpool import Invitation, Reservation, ReservationMatch, ReservationStats

# How a full rebuild counts: by sorting sequential scans and merging them, which costs
# the same whatever state the table is in. Hashing a million groups per count is the
# slowest way; merging counts read in key order off the indexes is fast only while the
# visibility map is intact, and once deletions clear it the index-only scans turn into
# heap fetches in index order. So the counts group by `column + 0`, which no index
# serves, and the full rebuild switches hashing off for its transaction. Index scans stay
# allowed: the foreign-key check of every inserted row needs them.
FULL_REBUILD_SETTINGS = {"enable_hashagg": "off", "enable_hashjoin": "off", "work_mem": "256MB"}

COUNTS = ("invite_sent", "invite_received", "matches")


def _unindexed(column: InstrumentedAttribute[int]) -> ColumnElement[int]:
    """`column + 0`: the same values, which no index serves (see FULL_REBUILD_SETTINGS)."""
    return column + literal_column("0")


def _rebuild_statement(only_given: bool) -> Insert:
    # The same statement for all reservations or a given few (parameter `ids`); for a
    # few, every aggregate is restricted to them so the cost follows the ids, not the tables.
    ids = id_array("ids")

    def only(column: InstrumentedAttribute[int]) -> list[ColumnElement[bool]]:
        return [column == any_(ids)] if only_given else []

    def count_by(column: InstrumentedAttribute[int], name: str) -> CTE:
        key = _unindexed(column)
        return (
            select(key.label("id"), func.count().label("n"))
            .where(*only(column))
            .group_by(key)
            .cte(name)
        )

    targets = select(Reservation.id).where(*only(Reservation.id)).cte("targets")
    sent = count_by(Invitation.reservation_id, "sent")
    received = count_by(Invitation.offer_id, "received")
    # A match row counts once for each reservation it names; a row naming the same
    # reservation on both sides counts once for it.
    sides = union_all(
        select(_unindexed(ReservationMatch.reservation_id).label("id")).where(
            *only(ReservationMatch.reservation_id)
        ),
        select(_unindexed(ReservationMatch.matched_reservation_id)).where(
            ReservationMatch.matched_reservation_id != ReservationMatch.reservation_id,
            *only(ReservationMatch.matched_reservation_id),
        ),
    ).subquery("sides")
    matched = select(sides.c.id, func.count().label("n")).group_by(sides.c.id).cte("matched")
    counts = (
        select(
            targets.c.id,
            func.coalesce(sent.c.n, 0),
            func.coalesce(received.c.n, 0),
            func.coalesce(matched.c.n, 0),
            func.now(),
        )
        .outerjoin(sent, sent.c.id == targets.c.id)
        .outerjoin(received, received.c.id == targets.c.id)
        .outerjoin(matched, matched.c.id == targets.c.id)
    )
    upsert = insert(ReservationStats).from_select(
        ["reservation_id", *COUNTS, "modified_on"], counts
    )
    # The caller reads how many rows were written: SQLAlchemy keeps an INSERT's rowcount
    # only when asked to.
    return upsert.execution_options(preserve_rowcount=True).on_conflict_do_update(
        index_elements=[ReservationStats.reservation_id],
        set_={c: upsert.excluded[c] for c in (*COUNTS, "modified_on")},
        # Rows whose counts are right are left alone: a rebuild writes only what changed.
        where=tuple_(*(ReservationStats.__table__.c[c] for c in COUNTS)).is_distinct_from(
            tuple_(*(upsert.excluded[c] for c in COUNTS))
        ),
    )


# Built once, not per call: every cleanup rebuilds the statistics of the reservations it
# touched, and building the statement anew would add Python work to each of them.
REBUILD_ALL = _rebuild_statement(only_given=False)
REBUILD_GIVEN = _rebuild_statement(only_given=True)


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
    # On the session's connection: parameters given to the session with an INSERT of a
    # mapped class would make it an ORM bulk insert of those values.
    connection = session.connection()
    if reservation_ids is None:
        set_local(session, FULL_REBUILD_SETTINGS)
        return connection.execute(REBUILD_ALL).rowcount
    return connection.execute(REBUILD_GIVEN, {"ids": sorted(set(reservation_ids))}).rowcount
