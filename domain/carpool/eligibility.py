"""Who may share a ride with whom, said once in Python (for reasoning and unit tests) and
once in SQL (for every cleanup statement).

A user *reaches* every enabled group they are an active member of, and every carpool
network that holds the enterprise of such a group. Two users are eligible for each other
when their reaches overlap: a shared group, or a shared network. A group without an
enterprise therefore only ever counts directly, and an enterprise outside every network
connects nobody beyond its own groups. A user is always eligible for themself: the rule
is about two people, and a link between one person's own reservations involves nobody else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    SQLColumnExpression,
    and_,
    distinct,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.sql.selectable import NamedFromClause

from models.carpool import CarpoolGroup, CarpoolNetwork, GroupMember, MembershipStatus


@dataclass(frozen=True)
class Group:
    """A carpool group as eligibility sees it."""

    id: int
    enterprise_id: int | None = None
    disabled: bool = False


@dataclass(frozen=True)
class Membership:
    """One `group_members` row."""

    group_id: int
    user_id: int
    status: MembershipStatus = MembershipStatus.ACTIVE


@dataclass(frozen=True)
class Reach:
    """The groups and networks through which a user can meet others."""

    group_ids: frozenset[int]
    network_ids: frozenset[int]

    def overlaps(self, other: Reach) -> bool:
        """True when the two reaches share a group or a network."""
        return bool(self.group_ids & other.group_ids or self.network_ids & other.network_ids)


@dataclass(frozen=True)
class Directory:
    """Groups, memberships and networks: everything eligibility depends on."""

    groups: tuple[Group, ...]
    memberships: tuple[Membership, ...]
    # (network_id, enterprise_id) pairs, as in `carpool_networks`.
    networks: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(
        cls,
        groups: Iterable[Group],
        memberships: Iterable[Membership],
        networks: Iterable[tuple[int, int]] = (),
    ) -> Directory:
        """Build a directory from any iterables."""
        return cls(tuple(groups), tuple(memberships), tuple(networks))

    def reach(self, user_id: int) -> Reach:
        """What `user_id` reaches: enabled groups of active memberships, and their networks."""
        enabled = {g.id: g for g in self.groups if not g.disabled}
        group_ids = frozenset(
            m.group_id
            for m in self.memberships
            if m.user_id == user_id
            and m.status == MembershipStatus.ACTIVE
            and m.group_id in enabled
        )
        enterprises = {
            enabled[g].enterprise_id for g in group_ids if enabled[g].enterprise_id is not None
        }
        network_ids = frozenset(n for n, e in self.networks if e in enterprises)
        return Reach(group_ids, network_ids)


def eligible(directory: Directory, user_a: int, user_b: int) -> bool:
    """True when `user_a` and `user_b` may share rides (see the module docstring)."""
    if user_a == user_b:
        return True
    return directory.reach(user_a).overlaps(directory.reach(user_b))


def reach_sql(owners: NamedFromClause) -> Select[Any, list[int], list[int]]:
    """The SQL twin of `Directory.reach`, over the users of `owners` (a column `user_id`).

    Yields one row per owner, `(user_id, group_ids bigint[], network_ids bigint[])`, with
    empty arrays for a user who reaches nothing. Restricting it to `owners` keeps a
    cleanup's cost proportional to the people it touches, not to the whole directory.
    """
    return (
        select(
            owners.c.user_id,
            _ids(CarpoolGroup.id).label("group_ids"),
            _ids(CarpoolNetwork.network_id).label("network_ids"),
        )
        .select_from(owners)
        .outerjoin(
            GroupMember,
            and_(
                GroupMember.user_id == owners.c.user_id,
                GroupMember.status == MembershipStatus.ACTIVE,
            ),
        )
        .outerjoin(
            CarpoolGroup, and_(CarpoolGroup.id == GroupMember.group_id, ~CarpoolGroup.disabled)
        )
        .outerjoin(CarpoolNetwork, CarpoolNetwork.enterprise_id == CarpoolGroup.enterprise_id)
        .group_by(owners.c.user_id)
    )


def _ids(column: SQLColumnExpression[int]) -> ColumnElement[list[int]]:
    """The distinct non-null values of `column` in a group, an empty array for none."""
    return func.coalesce(
        func.array_agg(distinct(column)).filter(column.is_not(None)),
        array([], type_=BigInteger),
        # PostgreSQL's ARRAY, whose comparator has `overlap` (`&&`) for eligible_sql.
        type_=ARRAY(BigInteger),
    )


def eligible_sql(reach_a: NamedFromClause, reach_b: NamedFromClause) -> ColumnElement[bool]:
    """The SQL twin of `eligible`, over two rows of `reach_sql`."""
    return or_(
        reach_a.c.user_id == reach_b.c.user_id,
        reach_a.c.group_ids.overlap(reach_b.c.group_ids),
        reach_a.c.network_ids.overlap(reach_b.c.network_ids),
    )
