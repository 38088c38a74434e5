"""Declines: who said no to whom, so the sweep keeps them apart for a while."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    CursorResult,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.orm import Session

from core.db import rowcount
from core.sql import seconds_before_now
from domain.peer.pairing import UserPair, user_pair
from domain.peer.rules import DECLINE_COOLDOWN_SECONDS
from models.peer import PeerDecline

# Declines of the last hour. People decline by hand, so there are few: a big claim reads
# them all, which costs less than matching them against its users.
_COOLDOWN: BindParameter[int] = bindparam("cooldown")
RECENT_DECLINES = select(PeerDecline.user_low, PeerDecline.user_high).where(
    PeerDecline.declined_at > seconds_before_now(_COOLDOWN)
)

# Reads for at most this many users take only the declines between two of them.
FEW_USERS = 2_000

# Declines of the last hour between two of the given users, for a small read (a
# triggered sweep of one topic, `peer.explain`), which runs far more often than a big
# one. The users travel as one comma-separated text and are matched by semi-joins.
_GIVEN_USERS = (
    select(
        func.unnest(
            cast(func.string_to_array(bindparam("users"), literal_column("','")), ARRAY(BigInteger))
        ).label("user_id")
    )
    .cte("given_users")
    .prefix_with("MATERIALIZED")
)
RECENT_DECLINES_AMONG = select(PeerDecline.user_low, PeerDecline.user_high).where(
    PeerDecline.user_low.in_(select(_GIVEN_USERS.c.user_id)),
    PeerDecline.user_high.in_(select(_GIVEN_USERS.c.user_id)),
    PeerDecline.declined_at > seconds_before_now(_COOLDOWN),
)

# Declines the cooldown is over for.
PRUNE_DECLINES = delete(PeerDecline).where(PeerDecline.declined_at <= seconds_before_now(_COOLDOWN))


def record_decline(session: Session, declined_by: int, other: int) -> None:
    """Remember that `declined_by` said no to `other`; a repeat restarts the cooldown."""
    low, high = user_pair(declined_by, other)
    session.execute(
        insert(PeerDecline)
        .values(user_low=low, user_high=high)
        .on_conflict_do_update(
            index_elements=[PeerDecline.user_low, PeerDecline.user_high],
            set_={"declined_at": func.now()},
        )
    )


def recent_declines(session: Session, user_ids: Sequence[int]) -> set[UserPair]:
    """The pairs of these users one of whom declined the other within the cooldown
    (for many users, every recent decline: the pairs of others never meet theirs)."""
    if len(user_ids) < 2:
        return set()
    rows: CursorResult[Any]
    if len(user_ids) > FEW_USERS:
        rows = session.connection().execute(RECENT_DECLINES, {"cooldown": DECLINE_COOLDOWN_SECONDS})
    else:
        rows = session.connection().execute(
            RECENT_DECLINES_AMONG,
            {"users": ",".join(map(str, user_ids)), "cooldown": DECLINE_COOLDOWN_SECONDS},
        )
    return {(row.user_low, row.user_high) for row in rows}


def prune_declines(session: Session) -> int:
    """Forget declines older than the cooldown (they no longer keep anyone apart); how many."""
    return rowcount(session.execute(PRUNE_DECLINES, {"cooldown": DECLINE_COOLDOWN_SECONDS}))
