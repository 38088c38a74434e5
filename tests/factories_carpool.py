"""Carpool test data: groups, networks, memberships, reservations and their links."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core.db import get_engine
from models import (
    CarpoolGroup,
    CarpoolNetwork,
    GroupMember,
    Invitation,
    Reservation,
    ReservationMatch,
    User,
)
from tests.factories import make_user, next_id, unique
from tests.support import lock_waiters


def make_group(
    session: Session, enterprise_id: int | None = None, disabled: bool = False
) -> CarpoolGroup:
    """A carpool group, optionally of an enterprise."""
    group = CarpoolGroup(
        id=next_id(), name=unique("group"), enterprise_id=enterprise_id, disabled=disabled
    )
    session.add(group)
    session.flush()
    return group


def make_network(session: Session, *enterprise_ids: int) -> int:
    """A carpool network holding these enterprises; returns its id."""
    network_id = next_id()
    session.add_all(CarpoolNetwork(network_id=network_id, enterprise_id=e) for e in enterprise_ids)
    session.flush()
    return network_id


def make_member(session: Session, *groups: CarpoolGroup, status: str = "active") -> User:
    """A user who is a member of every given group."""
    user = make_user(session)
    join(session, user, *groups, status=status)
    return user


def join(session: Session, user: User, *groups: CarpoolGroup, status: str = "active") -> None:
    """Add memberships of `user` to `groups`."""
    session.add_all(GroupMember(group_id=g.id, user_id=user.id, status=status) for g in groups)
    session.flush()


def make_reservation(session: Session, user: User, status: str = "searching") -> Reservation:
    """A reservation of `user`."""
    reservation = Reservation(id=next_id(), user_id=user.id, status=status)
    session.add(reservation)
    session.flush()
    return reservation


def invite(session: Session, sender: Reservation, offer: Reservation) -> Invitation:
    """`sender` invites `offer`."""
    invitation = Invitation(id=next_id(), reservation_id=sender.id, offer_id=offer.id)
    session.add(invitation)
    session.flush()
    return invitation


def match(session: Session, first: Reservation, second: Reservation) -> ReservationMatch:
    """A match between two reservations."""
    row = ReservationMatch(id=next_id(), reservation_id=first.id, matched_reservation_id=second.id)
    session.add(row)
    session.flush()
    return row


def existing(
    session: Session, model: type[Invitation] | type[ReservationMatch], ids: Iterable[int]
) -> set[int]:
    """Which of these invitation or match ids still exist."""
    wanted = list(ids)
    return set(session.scalars(select(model.id).where(model.id.in_(wanted))))


def events_for(session: Session, event_type: str, key: str, ids: Iterable[int]) -> list[dict]:
    """Outbox payloads of `event_type` whose `key` is one of `ids`."""
    wanted = [str(i) for i in ids]
    rows = session.execute(
        text("SELECT data FROM outbox WHERE type = :t AND data->>:k = ANY(:ids)"),
        {"t": event_type, "k": key, "ids": wanted},
    )
    return [row[0] for row in rows]


def recounted_stats(
    session: Session, reservation_ids: Iterable[int]
) -> dict[int, tuple[int, int, int]]:
    """A plain recount of (invite_sent, invite_received, matches) per reservation."""
    result = {}
    for rid in reservation_ids:
        sent = session.scalar(select(func.count()).where(Invitation.reservation_id == rid))
        received = session.scalar(select(func.count()).where(Invitation.offer_id == rid))
        matches = session.scalar(
            select(func.count()).where(
                (ReservationMatch.reservation_id == rid)
                | (ReservationMatch.matched_reservation_id == rid)
            )
        )
        result[rid] = (sent or 0, received or 0, matches or 0)
    return result


def stored_stats(
    session: Session, reservation_ids: Iterable[int]
) -> dict[int, tuple[int, int, int]]:
    """What `reservation_stats` holds for these reservations."""
    rows = session.execute(
        text(
            "SELECT reservation_id, invite_sent, invite_received, matches FROM reservation_stats "
            "WHERE reservation_id = ANY(:ids)"
        ),
        {"ids": list(reservation_ids)},
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


# The audit: links among `user_ids` whose users share no enabled group and no network,
# written straight from the contract's wording, independently of the domain's SQL.
INELIGIBLE_LINKS = """
    WITH active AS (
        SELECT gm.user_id, g.id AS group_id, g.enterprise_id
        FROM group_members gm JOIN carpool_groups g ON g.id = gm.group_id
        WHERE gm.status = 'active' AND NOT g.disabled
    ),
    links AS (
        SELECT 'invitation' AS kind, id, reservation_id AS a, offer_id AS b FROM invitations
        UNION ALL
        SELECT 'match', id, reservation_id, matched_reservation_id FROM reservation_matches
    )
    SELECT l.kind, l.id
    FROM links l
    JOIN reservations ra ON ra.id = l.a
    JOIN reservations rb ON rb.id = l.b
    WHERE ra.user_id = ANY(:users) AND rb.user_id = ANY(:users)
      AND ra.user_id <> rb.user_id
      AND NOT EXISTS (
          SELECT 1 FROM active x JOIN active y ON x.group_id = y.group_id
          WHERE x.user_id = ra.user_id AND y.user_id = rb.user_id
      )
      AND NOT EXISTS (
          SELECT 1
          FROM active x
          JOIN carpool_networks nx ON nx.enterprise_id = x.enterprise_id
          JOIN carpool_networks ny ON ny.network_id = nx.network_id
          JOIN active y ON y.enterprise_id = ny.enterprise_id
          WHERE x.user_id = ra.user_id AND y.user_id = rb.user_id
      )
"""


def ineligible_links(session: Session, user_ids: Iterable[int]) -> list[tuple[str, int]]:
    """Invitations and matches among these users' reservations that eligibility forbids."""
    rows = session.execute(text(INELIGIBLE_LINKS), {"users": list(user_ids)})
    return [(r[0], r[1]) for r in rows]


def make_members(session: Session, count: int, *groups: CarpoolGroup) -> list[User]:
    """`count` users, each a member of every given group, in increasing id order."""
    users = [make_user(session) for _ in range(count)]
    session.add_all(GroupMember(group_id=g.id, user_id=u.id) for u in users for g in groups)
    session.flush()
    return users


@contextmanager
def holding_invitation(invitation_id: int) -> Iterator[None]:
    """An open transaction holding one invitation's row lock for the block: a cleanup
    deleting that invitation waits, with the carpool lock held, until the block ends."""
    blocker = get_engine().connect()
    blocker.exec_driver_sql("BEGIN")
    try:
        blocker.execute(
            text("SELECT id FROM invitations WHERE id = :id FOR UPDATE"), {"id": invitation_id}
        )
        yield
    finally:
        blocker.exec_driver_sql("COMMIT")
        blocker.close()


def cleanups_blocked_deleting_invitations() -> int:
    """Cleanups of this database waiting on a row lock in their invitation DELETE."""
    return lock_waiters("%carpool: remove ineligible invitations%")


def cleanups_queued_for_the_carpool_lock() -> int:
    """Sessions of this database waiting for the carpool advisory lock."""
    return lock_waiters("%pg_advisory_xact_lock%")
