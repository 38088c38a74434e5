"""The advisory lock a sweep holds on a pool while it pairs it.

A transaction-level advisory lock of two int4 keys: one for "a peer pool", one hashed
from the pool's difficulty and topic (joined by a unit separator, which neither
contains). `peer.explain` reads `pg_locks` for the same keys to tell that a sweep holds
a pool without taking the lock itself.
"""

from __future__ import annotations

from sqlalchemy import (
    ColumnClause,
    ColumnElement,
    Integer,
    cast,
    column,
    exists,
    func,
    literal_column,
    select,
    table,
)
from sqlalchemy.dialects.postgresql import OID
from sqlalchemy.orm import InstrumentedAttribute

from core.sql import inline

POOL_LOCK_NAME = "matchops.peer.pool"
# A pool's difficulty or topic: a column, or an expression of one.
PoolPart = ColumnElement[str] | InstrumentedAttribute[str]
_UNIT_SEPARATOR: ColumnClause[str] = literal_column("E'\\x1f'")

# The views `pool_lock_held` reads, with the columns it reads.
_PG_LOCKS = table(
    "pg_locks",
    column("locktype"),
    column("granted"),
    column("objsubid"),
    column("database"),
    column("classid"),
    column("objid"),
)
_PG_DATABASE = table("pg_database", column("oid"), column("datname"))


def pool_lock_keys(
    difficulty: PoolPart, topic: PoolPart
) -> tuple[ColumnElement[int], ColumnElement[int]]:
    """Both keys, given expressions of a pool's difficulty and topic:
    `func.pg_try_advisory_xact_lock(*pool_lock_keys(difficulty, topic))`."""
    return (
        func.hashtext(inline(POOL_LOCK_NAME), type_=Integer),
        func.hashtext(difficulty.op("||")(_UNIT_SEPARATOR).op("||")(topic), type_=Integer),
    )


def pool_lock_held(difficulty: PoolPart, topic: PoolPart) -> ColumnElement[bool]:
    """Whether a transaction of this database holds the pool's lock.

    `pg_locks` shows a two-key advisory lock with its keys, reinterpreted as oid, in
    `classid` and `objid`, and 2 in `objsubid`.
    """
    class_key, object_key = pool_lock_keys(difficulty, topic)
    locks = _PG_LOCKS.c
    this_database = (
        select(_PG_DATABASE.c.oid)
        .where(_PG_DATABASE.c.datname == func.current_database())
        .scalar_subquery()
    )
    # Correlated to whatever the pool's expressions read, inside the caller's query.
    return (
        exists()
        .where(
            locks.locktype == inline("advisory"),
            locks.granted,
            locks.objsubid == literal_column("2"),
            locks.database == this_database,
            locks.classid == cast(class_key, OID),
            locks.objid == cast(object_key, OID),
        )
        .correlate_except(_PG_LOCKS)
    )
