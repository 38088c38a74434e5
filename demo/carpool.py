"""Carpool: two enterprises in one network, a cycling club, a night shift that closes.

Seeds groups, memberships, reservations, invitations and matches directly in PostgreSQL,
as the carpool app would, then through the HTTP API: a member leaves a group, a group is
deleted, the periodic cleanup runs, and the leaving is repeated to show it is idempotent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import session_factory
from demo.client import ApiClient
from demo.steps import expect, succeeded
from models import (
    CarpoolGroup,
    CarpoolNetwork,
    GroupMember,
    Invitation,
    Reservation,
    ReservationMatch,
    ReservationStats,
    User,
)

# Who belongs where. Acme and Globex share the "business park" network; Initech does not.
MEMBERSHIPS = {
    "ana": ("acme", "cycling"),
    "ben": ("globex", "night"),
    "cleo": ("initech", "cycling"),
    "dan": ("acme", "night"),
    "eve": ("night",),
    "fay": ("initech", "night"),
    "gus": (),
}
INVITATIONS = (
    ("ana", "ben"),  # Acme and Globex: the network keeps it
    ("ana", "cleo"),  # the cycling club only: goes when Cleo leaves it
    ("cleo", "fay"),  # Initech colleagues
    ("dan", "eve"),  # the night shift only: goes with it
    ("eve", "ben"),  # the night shift only
    ("ben", "dan"),  # night shift, and Acme and Globex: survives the shift's closing
    ("fay", "ben"),  # night shift only; Initech is outside the network
    ("gus", "ana"),  # never shared anything: left behind by a bug, for the sweep
)
MATCHES = (("ana", "cleo"), ("dan", "eve"), ("ana", "ben"))


@dataclass
class Seeded:
    """Ids of what the scenario created."""

    groups: dict[str, int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)
    reservations: dict[str, int] = field(default_factory=dict)
    invitations: dict[tuple[str, str], int] = field(default_factory=dict)
    matches: dict[tuple[str, str], int] = field(default_factory=dict)


def _fresh_ids(session: Session, count: int) -> list[int]:
    # Enterprise and network ids are the carpool app's; the demo keeps clear of any in use.
    top = session.scalar(
        select(
            func.greatest(
                select(func.coalesce(func.max(CarpoolNetwork.network_id), 0)).scalar_subquery(),
                select(func.coalesce(func.max(CarpoolNetwork.enterprise_id), 0)).scalar_subquery(),
                select(func.coalesce(func.max(CarpoolGroup.enterprise_id), 0)).scalar_subquery(),
            )
        )
    )
    return [int(top or 0) + n for n in range(1, count + 1)]


def seed(session: Session) -> Seeded:
    """Create the scenario's rows; every name is suffixed so reruns never collide."""
    run = uuid.uuid4().hex[:8]
    acme, globex, initech, park = _fresh_ids(session, 4)
    session.add_all(
        [
            CarpoolNetwork(network_id=park, enterprise_id=acme),
            CarpoolNetwork(network_id=park, enterprise_id=globex),
        ]
    )
    groups = {
        "acme": CarpoolGroup(name=f"Acme riders {run}", enterprise_id=acme),
        "globex": CarpoolGroup(name=f"Globex riders {run}", enterprise_id=globex),
        "initech": CarpoolGroup(name=f"Initech riders {run}", enterprise_id=initech),
        "cycling": CarpoolGroup(name=f"Cycling club {run}"),
        "night": CarpoolGroup(name=f"Night shift {run}"),
    }
    users = {
        name: User(email=f"{name}.{run}@carpool.demo", display_name=name.title(), role="member")
        for name in MEMBERSHIPS
    }
    session.add_all([*groups.values(), *users.values()])
    session.flush()
    session.add_all(
        GroupMember(group_id=groups[g].id, user_id=users[name].id)
        for name, memberships in MEMBERSHIPS.items()
        for g in memberships
    )
    reservations = {name: Reservation(user_id=user.id) for name, user in users.items()}
    session.add_all(reservations.values())
    session.flush()
    invitations = {
        pair: Invitation(reservation_id=reservations[pair[0]].id, offer_id=reservations[pair[1]].id)
        for pair in INVITATIONS
    }
    matches = {
        pair: ReservationMatch(
            reservation_id=reservations[pair[0]].id,
            matched_reservation_id=reservations[pair[1]].id,
        )
        for pair in MATCHES
    }
    session.add_all([*invitations.values(), *matches.values()])
    session.flush()
    return Seeded(
        groups={k: g.id for k, g in groups.items()},
        users={k: u.id for k, u in users.items()},
        reservations={k: r.id for k, r in reservations.items()},
        invitations={k: i.id for k, i in invitations.items()},
        matches={k: m.id for k, m in matches.items()},
    )


def surviving(seeded: Seeded) -> dict[str, list[str]]:
    """The scenario's invitations and matches still in the database, as `a->b` / `a<->b`."""
    with session_factory().begin() as session:
        invitation_ids = set(
            session.scalars(
                select(Invitation.id).where(Invitation.id.in_(seeded.invitations.values()))
            )
        )
        match_ids = set(
            session.scalars(
                select(ReservationMatch.id).where(ReservationMatch.id.in_(seeded.matches.values()))
            )
        )
    return {
        "invitations": [
            f"{a}->{b}" for (a, b), i in seeded.invitations.items() if i in invitation_ids
        ],
        "matches": [f"{a}<->{b}" for (a, b), i in seeded.matches.items() if i in match_ids],
    }


def _change(before: dict[str, list[str]], after: dict[str, list[str]], kind: str) -> str:
    return f"{len(before[kind])} -> {len(after[kind])}"


def run(client: ApiClient) -> dict[str, Any]:
    """Seed the carpool, drive the cleanups through the API, summarise before and after."""
    with session_factory().begin() as session:
        seeded = seed(session)
    before = surviving(seeded)
    ids = list(seeded.reservations.values())
    succeeded(client.call("carpool.rebuild_stats", {"reservation_ids": ids}), "rebuild_stats")

    leave = {"group_id": seeded.groups["cycling"], "user_id": seeded.users["cleo"]}
    left = succeeded(client.call("carpool.member_left", leave), "cleo leaving the cycling club")
    expect(
        (left["invitations_removed"], left["matches_removed"]) == (1, 1),
        "cleo's leaving removes ana->cleo and their match",
        result=left,
    )

    deleted = succeeded(
        client.call("carpool.group_deleted", {"group_id": seeded.groups["night"], "batch_size": 2}),
        "closing the night shift",
    )
    expect(
        (deleted["invitations_removed"], deleted["matches_removed"]) == (3, 1),
        "closing the night shift removes dan->eve, eve->ben, fay->ben and the dan<->eve match",
        result=deleted,
    )

    swept = succeeded(client.call("carpool.cleanup_invitations"), "the periodic cleanup")
    after = surviving(seeded)
    expect("gus->ana" not in after["invitations"], "the cleanup removes gus->ana", after=after)
    expect(
        after["invitations"] == ["ana->ben", "cleo->fay", "ben->dan"]
        and after["matches"] == ["ana<->ben"],
        "what eligibility still justifies survives",
        after=after,
    )

    again = succeeded(client.call("carpool.member_left", leave), "cleo leaving again")
    expect(
        again["invitations_removed"] == again["matches_removed"] == 0,
        "leaving twice removes nothing more",
        result=again,
    )
    with session_factory().begin() as session:
        stats = session.get(ReservationStats, seeded.reservations["ana"])
        ana = (stats.invite_sent, stats.invite_received, stats.matches) if stats else None
    expect(ana == (1, 0, 1), "ana's statistics follow the removals", stats=ana)
    return {
        "invitations before -> after": _change(before, after, "invitations"),
        "matches before -> after": _change(before, after, "matches"),
        "before": before,
        "cleo leaves the cycling club": left,
        "night shift closed": {
            k: deleted[k] for k in ("members", "batches", "invitations_removed", "matches_removed")
        },
        "periodic cleanup (whole database)": swept,
        "after": after,
        "cleo leaves again": again,
        "ana's statistics (sent, received, matches)": ana,
    }
