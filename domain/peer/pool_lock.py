"""The advisory lock a sweep holds on a pool while it pairs it.

A transaction-level advisory lock of two int4 keys: one for "a peer pool", one hashed
from the pool's difficulty and topic (joined by a unit separator, which neither
contains). `peer.explain` reads `pg_locks` for the same keys to tell that a sweep holds
a pool without taking the lock itself.
"""

from __future__ import annotations

POOL_LOCK_NAME = "matchops.peer.pool"
# The first key, the same for every pool.
POOL_LOCK_CLASS_KEY = f"hashtext('{POOL_LOCK_NAME}')"


def pool_lock_object_key(difficulty_sql: str, topic_sql: str) -> str:
    """The second key as SQL, given SQL expressions of a pool's difficulty and topic."""
    return f"hashtext({difficulty_sql} || E'\\x1f' || {topic_sql})"


def pool_lock_keys(difficulty_sql: str, topic_sql: str) -> str:
    """Both keys as SQL arguments:
    `pg_try_advisory_xact_lock({pool_lock_keys("difficulty", "topic")})`."""
    return f"{POOL_LOCK_CLASS_KEY}, {pool_lock_object_key(difficulty_sql, topic_sql)}"


def pool_lock_held(difficulty_sql: str, topic_sql: str) -> str:
    """SQL of a boolean: whether a transaction of this database holds the pool's lock.

    `pg_locks` shows a two-key advisory lock with its keys, reinterpreted as oid, in
    `classid` and `objid`, and 2 in `objsubid`.
    """
    return f"""EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND objsubid = 2
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND classid = CAST({POOL_LOCK_CLASS_KEY} AS oid)
          AND objid = CAST({pool_lock_object_key(difficulty_sql, topic_sql)} AS oid)
    )"""
