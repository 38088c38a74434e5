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
from functools import cache

from sqlalchemy import Select, any_, delete, func, select, union
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased
from sqlalchemy.sql.dml import ReturningDelete

from core.outbox import emit_events
from core.results import TaskResult
from core.sql import id_array, set_local
from domain.carpool.eligibility import eligible_sql, reach_sql
from domain.carpool.stats import rebuild_stats
from models.carpool import Invitation, Reservation, ReservationMatch

# The prune statements' estimated costs cross PostgreSQL's `jit_above_cost`, but they
# run for tens of milliseconds: compiling them takes longer than it saves, and every
# batch holds the carpool lock that membership cleanups wait for.
NO_JIT = {"jit": "off"}


@dataclass(frozen=True)
class LinkTable:
    """A table linking two reservations, and the event announcing a removed row."""

    model: type[Invitation] | type[ReservationMatch]
    id: InstrumentedAttribute[int]
    # The two reservations; their column names are also their keys in the event payload.
    left: InstrumentedAttribute[int]
    right: InstrumentedAttribute[int]
    event: str
    # Names of the row id and its two ends' users in the event payload.
    id_key: str
    left_user_key: str
    right_user_key: str


INVITATIONS = LinkTable(
    model=Invitation,
    id=Invitation.id,
    left=Invitation.reservation_id,
    right=Invitation.offer_id,
    event="carpool.invitation.removed",
    id_key="invitation_id",
    left_user_key="reservation_user_id",
    right_user_key="offer_user_id",
)
MATCHES = LinkTable(
    model=ReservationMatch,
    id=ReservationMatch.id,
    left=ReservationMatch.reservation_id,
    right=ReservationMatch.matched_reservation_id,
    event="carpool.match.removed",
    id_key="match_id",
    left_user_key="reservation_user_id",
    right_user_key="matched_user_id",
)


@dataclass(frozen=True)
class Scope:
    """The reservations whose links a cleanup checks: a select of their `id`, and the
    values of its parameters."""

    reservations: Select[int]
    params: dict[str, list[int]]


_OWNED_BY = select(Reservation.id).where(Reservation.user_id == any_(id_array("scope_users")))
_LISTED = select(func.unnest(id_array("scope_reservations")).label("id"))


def reservations_of(user_ids: Collection[int]) -> Scope:
    """Every reservation of these users, whatever its status."""
    return Scope(_OWNED_BY, {"scope_users": sorted(set(user_ids))})


def reservations_by_id(reservation_ids: Collection[int]) -> Scope:
    """Exactly these reservations (one batch of a cleanup over the whole table)."""
    return Scope(_LISTED, {"scope_reservations": sorted(set(reservation_ids))})


@dataclass(frozen=True)
class Cause:
    """Why links are removed; copied into every event."""

    reason: str  # member_left | group_deleted | cleanup
    group_id: int | None = None


class RemovalResult(TaskResult):
    """What a cleanup removed, and how many reservations' statistics it rebuilt."""

    invitations_removed: int
    matches_removed: int
    reservations_touched: int


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

    def as_dict(self) -> RemovalResult:
        """The counts as a task result."""
        return {
            "invitations_removed": self.invitations_removed,
            "matches_removed": self.matches_removed,
            "reservations_touched": len(self.touched),
        }


# Built once per table and kind of scope, the values bound at each execution: assembling
# them anew for every call and running them through the ORM adds Python work to every
# batch that holds the carpool lock.
@cache
def _prune_statement(
    link: LinkTable, reservations: Select[int]
) -> ReturningDelete[int, int, int, int, int]:
    # The comment names the statement in pg_stat_activity, whose query text is cut at
    # 1 kB, long before the DELETE. Core writes the WITH clause before anything of the
    # DELETE's own, so the comment goes on the first CTE: `WITH scope AS /* … */ (…`.
    scoped = reservations.cte("scope").prefix_with(
        f"/* carpool: remove ineligible {link.model.__tablename__} */"
    )
    # Two index lookups instead of one OR that no index serves.
    links = union(
        select(link.id, link.left.label("left_id"), link.right.label("right_id")).join(
            scoped, scoped.c.id == link.left
        ),
        select(link.id, link.left, link.right).join(scoped, scoped.c.id == link.right),
    ).cte("scoped_links")
    a, b = aliased(Reservation, name="a"), aliased(Reservation, name="b")
    ends = (
        select(links.c.id, a.user_id.label("left_user"), b.user_id.label("right_user"))
        .join(a, a.id == links.c.left_id)
        .join(b, b.id == links.c.right_id)
        .cte("ends")
    )
    owners = union(select(ends.c.left_user.label("user_id")), select(ends.c.right_user)).cte(
        "owners"
    )
    reach = reach_sql(owners).cte("reach")
    ra, rb = reach.alias("ra"), reach.alias("rb")
    doomed = (
        select(ends.c.id, ends.c.left_user, ends.c.right_user)
        .join(ra, ra.c.user_id == ends.c.left_user)
        .join(rb, rb.c.user_id == ends.c.right_user)
        .where(~eligible_sql(ra, rb))
        .cte("doomed")
    )
    return (
        delete(link.model)
        .where(link.id == doomed.c.id)
        .returning(link.id, link.left, link.right, doomed.c.left_user, doomed.c.right_user)
    )


def _prune(session: Session, link: LinkTable, scope: Scope, cause: Cause, touched: set[int]) -> int:
    # On the session's connection, as Core: the ORM would also look for the deleted rows
    # among the session's objects, and a cleanup loads none.
    rows = (
        session.connection().execute(_prune_statement(link, scope.reservations), scope.params).all()
    )
    emit_events(
        session,
        link.event,
        [
            {
                link.id_key: row_id,
                link.left.key: left_id,
                link.right.key: right_id,
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
    set_local(session, NO_JIT)
    touched: set[int] = set()
    invitations = _prune(session, INVITATIONS, scope, cause, touched)
    matches = _prune(session, MATCHES, scope, cause, touched)
    rebuild_stats(session, touched)
    return Removal(invitations, matches, touched)
