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
    Text,
    and_,
    bindparam,
    cast,
    column,
    exists,
    func,
    literal_column,
    select,
    table,
)
from sqlalchemy.dialects.postgresql import ARRAY, OID
from sqlalchemy.orm import InstrumentedAttribute

from core.sql import inline

POOL_LOCK_NAME = "matchops.peer.pool"
# A pool's difficulty or topic: a column, or an expression of one.
PoolPart = ColumnElement[str] | InstrumentedAttribute[str]
_UNIT_SEPARATOR: ColumnClause[str] = literal_column("E'\\x1f'")

# The views `pool_lock_held` and `POOLS_HELD_FOR` read, with the columns they read.
_PG_LOCKS = table(
    "pg_locks",
    column("pid"),
    column("locktype"),
    column("granted"),
    column("objsubid"),
    column("database"),
    column("classid"),
    column("objid"),
)
_PG_DATABASE = table("pg_database", column("oid"), column("datname"))
_PG_STAT_ACTIVITY = table("pg_stat_activity", column("pid"), column("xact_start"))


def pool_lock_keys(
    difficulty: PoolPart, topic: PoolPart
) -> tuple[ColumnElement[int], ColumnElement[int]]:
    """Both keys, given expressions of a pool's difficulty and topic:
    `func.pg_try_advisory_xact_lock(*pool_lock_keys(difficulty, topic))`."""
    return (
        func.hashtext(inline(POOL_LOCK_NAME), type_=Integer),
        func.hashtext(difficulty.op("||")(_UNIT_SEPARATOR).op("||")(topic), type_=Integer),
    )


def _holds_pool_lock(difficulty: PoolPart, topic: PoolPart) -> ColumnElement[bool]:
    """Whether the `pg_locks` row is a granted lock of this database on the pool.

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
    return and_(
        locks.locktype == inline("advisory"),
        locks.granted,
        locks.objsubid == literal_column("2"),
        locks.database == this_database,
        locks.classid == cast(class_key, OID),
        locks.objid == cast(object_key, OID),
    )


def pool_lock_held(difficulty: PoolPart, topic: PoolPart) -> ColumnElement[bool]:
    """Whether a transaction of this database holds the pool's lock."""
    # Correlated to whatever the pool's expressions read, inside the caller's query.
    return exists().where(_holds_pool_lock(difficulty, topic)).correlate_except(_PG_LOCKS)


_HELD_POOLS = (
    func.unnest(
        bindparam("difficulties", type_=ARRAY(Text)), bindparam("topics", type_=ARRAY(Text))
    )
    .table_valued("difficulty", "topic")
    .render_derived(name="held")
)
# How long, in seconds, the youngest of the transactions holding the pools named by the
# `difficulties` and `topics` arrays (pairwise) has been open; NULL when none holds one.
POOLS_HELD_FOR = (
    select(func.min(func.extract("epoch", func.now() - _PG_STAT_ACTIVITY.c.xact_start)))
    .select_from(_HELD_POOLS)
    .join(_PG_LOCKS, _holds_pool_lock(_HELD_POOLS.c.difficulty, _HELD_POOLS.c.topic))
    .join(_PG_STAT_ACTIVITY, _PG_STAT_ACTIVITY.c.pid == _PG_LOCKS.c.pid)
)
