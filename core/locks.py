"""Named transaction-level advisory locks.

Every lock of matchops is named (`matchops.carpool.links`), and the name is hashed by
PostgreSQL, so locks of different domains cannot collide on a hand-picked number.
"""

from __future__ import annotations

from sqlalchemy import Connection, Integer, bindparam, func, select
from sqlalchemy.orm import Session

_LOCK = select(func.pg_advisory_xact_lock(func.hashtext(bindparam("name"), type_=Integer)))


def hold_advisory_lock(session: Session | Connection, name: str) -> None:
    """Wait for the lock `name`, then hold it until the transaction ends."""
    session.execute(_LOCK, {"name": name})
