"""Declines: who said no to whom, so the sweep keeps them apart for a while."""

from __future__ import annotations

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.db import rowcount
from domain.peer.pairing import user_pair
from domain.peer.rules import DECLINE_COOLDOWN_SECONDS
from models.peer import PeerDecline


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


def prune_declines(session: Session) -> int:
    """Forget declines older than the cooldown (they no longer keep anyone apart); how many."""
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, DECLINE_COOLDOWN_SECONDS)
    return rowcount(session.execute(delete(PeerDecline).where(PeerDecline.declined_at <= cutoff)))
