"""The open-match cap (`MAX_CONCURRENT_MATCHES`), shared by every sweep.

A sweep reserves part of the cap in a short transaction of its own, under one global
lock: the cap minus open matches minus other sweeps' live reservations. Open matches
plus live reservations never exceed the cap, whatever the number of sweeps racing: each
reservation is counted and taken under the lock, and turns into matches in the commit
that drops it. `peer.explain` reads the same free room without reserving it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import (
    BindParameter,
    Integer,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    true,
)
from sqlalchemy.orm import Session, sessionmaker

from core.sql import inline, seconds_before_now
from models.peer import Match, MatchReservation, MatchStatus

# The cap on open matches is global: every reservation of it is counted and taken under
# this one lock, held only by the short reserving transaction.
OPEN_MATCH_BUDGET_LOCK = "matchops.peer.open_matches"

# A reservation lost in a crash is harmless (the matches it covers commit with a flush
# of their own), so its commit need not wait for the disk.
RESERVATION_LOCK = select(
    func.set_config(inline("synchronous_commit"), inline("off"), true()),
    func.pg_advisory_xact_lock(func.hashtext(bindparam("name"), type_=Integer)),
)

# What is left of the cap: the cap minus open matches minus live reservations.
# Reservations older than `:stale_after` seconds belong to a sweep that died before
# deleting its row. Open matches are counted no further than the cap: beyond it nothing
# is free anyway.
_CAP: BindParameter[int] = bindparam("cap", type_=Integer)
_OPEN_MATCHES_UP_TO_CAP = (
    select(literal_column("1"))
    .where(Match.status == MatchStatus.PENDING_CONFIRMATION)
    .limit(_CAP)
    .subquery("open_matches")
)
_FREE = (
    _CAP
    - select(func.count()).select_from(_OPEN_MATCHES_UP_TO_CAP).scalar_subquery()
    - select(func.coalesce(func.sum(MatchReservation.pairs), 0))
    .where(MatchReservation.reserved_at > seconds_before_now(bindparam("stale_after")))
    .scalar_subquery()
)

# What is left of the cap, up to what the sweep can use.
_FREE_FOR_SWEEP = (
    select(func.least(bindparam("wanted"), _FREE).label("pairs"))
    .cte("free")
    .prefix_with("MATERIALIZED")
)
RESERVE = (
    insert(MatchReservation)
    .from_select(["pairs"], select(_FREE_FOR_SWEEP.c.pairs).where(_FREE_FOR_SWEEP.c.pairs > 0))
    .returning(MatchReservation.id, MatchReservation.pairs)
)

# What is left of the cap, read without reserving it (for `peer.explain`).
FREE_PAIRS = select(_FREE)

# Run in the transaction that writes a sweep's matches. Core, built once: an ORM delete
# would also look for the rows among the session's objects.
RELEASE = delete(MatchReservation).where(MatchReservation.id == bindparam("reservation"))

# Every open match, not only up to the cap (the metrics endpoint reports it).
OPEN_MATCHES = select(func.count()).where(Match.status == MatchStatus.PENDING_CONFIRMATION)


@dataclass(frozen=True)
class Reservation:
    """Part of the open-match cap held until the sweep's matches are written."""

    id: uuid.UUID
    pairs: int


def count_open_matches(session: Session) -> int:
    """Matches awaiting confirmation right now."""
    return int(session.connection().scalar(OPEN_MATCHES) or 0)


def free_pairs(session: Session, cap: int, stale_after: int) -> int:
    """Pairs the cap has room for now, counted as `reserve` counts them (see
    `_FREE`), without reserving any; zero or less when it has none."""
    return int(
        session.connection().scalar(FREE_PAIRS, {"cap": cap, "stale_after": stale_after}) or 0
    )


def reserve(
    sessions: sessionmaker[Session], wanted: int, cap: int, stale_after: int
) -> Reservation | None:
    """Reserve up to `wanted` pairs of the open-match cap in a transaction of its own."""
    with sessions.begin() as session:
        session.connection().execute(RESERVATION_LOCK, {"name": OPEN_MATCH_BUDGET_LOCK})
        row = (
            session.connection()
            .execute(RESERVE, {"wanted": wanted, "cap": cap, "stale_after": stale_after})
            .one_or_none()
        )
    return None if row is None else Reservation(row.id, row.pairs)


def release(sessions: sessionmaker[Session], reservation: Reservation) -> None:
    """Give a reservation back after the sweep failed before writing its matches."""
    with sessions.begin() as session:
        release_in(session, reservation)


def release_in(session: Session, reservation: Reservation) -> None:
    """Drop the reservation in `session`'s transaction: its matches now count instead."""
    session.connection().execute(RELEASE, {"reservation": reservation.id})
