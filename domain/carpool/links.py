"""Removing invitations and matches that eligibility no longer justifies, set-based.

Every cleanup (a member leaving, a group deleted, the periodic sweep) is the same three
steps over a different *scope*, the reservations whose links are checked: delete the
ineligible invitations, delete the ineligible matches, rebuild the statistics of every
reservation on either side of a deleted row. `DELETE … RETURNING` decides what was
removed, so a rerun, or a cleanup racing another, reports and announces each row once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.outbox import emit_events
from domain.carpool.eligibility import eligible_sql, reach_sql
from domain.carpool.stats import rebuild_stats

# The prune statements' estimated costs cross PostgreSQL's `jit_above_cost`, but they
# run for tens of milliseconds: compiling them took longer than it saved (a cleanup batch
# of 1,000 reservations over 3,000,000 invitations took 260 ms with JIT, 130 ms without).
# SET LOCAL: the setting ends with the transaction.
NO_JIT = text("SELECT set_config('jit', 'off', true)")


@dataclass(frozen=True)
class LinkTable:
    """A table linking two reservations, and the event announcing a removed row."""

    table: str
    left: str
    right: str
    event: str
    # Names of the row id and its two ends in the event payload.
    id_key: str
    left_user_key: str
    right_user_key: str


INVITATIONS = LinkTable(
    table="invitations",
    left="reservation_id",
    right="offer_id",
    event="carpool.invitation.removed",
    id_key="invitation_id",
    left_user_key="reservation_user_id",
    right_user_key="offer_user_id",
)
MATCHES = LinkTable(
    table="reservation_matches",
    left="reservation_id",
    right="matched_reservation_id",
    event="carpool.match.removed",
    id_key="match_id",
    left_user_key="reservation_user_id",
    right_user_key="matched_user_id",
)


@dataclass(frozen=True)
class Scope:
    """The reservations whose links a cleanup checks: a `SELECT id FROM reservations …`."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)


def reservations_of(user_ids: Collection[int]) -> Scope:
    """Every reservation of these users, whatever its status."""
    return Scope(
        "SELECT id FROM reservations WHERE user_id = ANY(CAST(:scope_users AS bigint[]))",
        {"scope_users": sorted(set(user_ids))},
    )


def reservations_by_id(reservation_ids: Collection[int]) -> Scope:
    """Exactly these reservations (one batch of a cleanup over the whole table)."""
    return Scope(
        "SELECT unnest(CAST(:scope_reservations AS bigint[])) AS id",
        {"scope_reservations": sorted(set(reservation_ids))},
    )


@dataclass(frozen=True)
class Cause:
    """Why links are removed; copied into every event."""

    reason: str  # member_left | group_deleted | cleanup
    group_id: int | None = None


@dataclass
class Removal:
    """What one cleanup removed, and the reservations whose statistics it rebuilt."""

    invitations_removed: int = 0
    matches_removed: int = 0
    touched: set[int] = field(default_factory=set)

    def add(self, other: Removal) -> None:
        """Accumulate another cleanup (the batches of one task)."""
        self.invitations_removed += other.invitations_removed
        self.matches_removed += other.matches_removed
        self.touched |= other.touched

    def as_dict(self) -> dict[str, int]:
        """The counts as a task result."""
        return {
            "invitations_removed": self.invitations_removed,
            "matches_removed": self.matches_removed,
            "reservations_touched": len(self.touched),
        }


def _prune_statement(link: LinkTable, scope: Scope) -> str:
    t, left, right = link.table, link.left, link.right
    # The leading comment names the statement in pg_stat_activity, whose query text is
    # cut at 1 kB, long before the DELETE.
    return f"""
        /* carpool: remove ineligible {t} */
        WITH scope AS ({scope.sql}),
        scoped_links AS (
            -- Two index lookups instead of one OR that no index serves.
            SELECT l.id, l.{left} AS left_id, l.{right} AS right_id
            FROM {t} l JOIN scope s ON s.id = l.{left}
            UNION
            SELECT l.id, l.{left}, l.{right}
            FROM {t} l JOIN scope s ON s.id = l.{right}
        ),
        ends AS (
            SELECT k.id, a.user_id AS left_user, b.user_id AS right_user
            FROM scoped_links k
            JOIN reservations a ON a.id = k.left_id
            JOIN reservations b ON b.id = k.right_id
        ),
        owners AS (
            SELECT left_user AS user_id FROM ends UNION SELECT right_user FROM ends
        ),
        reach AS ({reach_sql("owners")}),
        doomed AS (
            SELECT e.id, e.left_user, e.right_user
            FROM ends e
            JOIN reach ra ON ra.user_id = e.left_user
            JOIN reach rb ON rb.user_id = e.right_user
            WHERE NOT {eligible_sql("ra", "rb")}
        )
        DELETE FROM {t} l USING doomed d
        WHERE l.id = d.id
        RETURNING l.id, l.{left}, l.{right}, d.left_user, d.right_user
    """


def _prune(session: Session, link: LinkTable, scope: Scope, cause: Cause, touched: set[int]) -> int:
    rows = session.execute(text(_prune_statement(link, scope)), scope.params).all()
    emit_events(
        session,
        link.event,
        [
            {
                link.id_key: row_id,
                link.left: left_id,
                link.right: right_id,
                link.left_user_key: left_user,
                link.right_user_key: right_user,
                "reason": cause.reason,
                "group_id": cause.group_id,
            }
            for row_id, left_id, right_id, left_user, right_user in rows
        ],
    )
    for _row_id, left_id, right_id, _left_user, _right_user in rows:
        touched.update((left_id, right_id))
    return len(rows)


def remove_ineligible_links(session: Session, scope: Scope, cause: Cause) -> Removal:
    """Delete every invitation and match touching `scope` whose two users are not eligible.

    Emits one event per removed row and rebuilds the statistics of every reservation on
    either side of one. The caller holds the carpool lock (see `domain.carpool.locking`)
    and has already written the membership change that motivates the cleanup.
    """
    session.execute(NO_JIT)
    touched: set[int] = set()
    invitations = _prune(session, INVITATIONS, scope, cause, touched)
    matches = _prune(session, MATCHES, scope, cause, touched)
    rebuild_stats(session, touched)
    return Removal(invitations, matches, touched)
