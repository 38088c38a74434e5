"""Collaboration-session documents in Redis (`session:{id}`), for the collaboration service.

PostgreSQL is the source of truth: keys are written only after the transaction that
created or changed the session has committed, never overwrite a document the
collaboration service may already be editing, and `maintenance.reconcile` rewrites any
that are missing.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis

from core.redis_client import RedisClient, redis_client
from domain.peer.rules import SESSION_LANGUAGE

SessionStore = RedisClient


def session_store() -> SessionStore:
    """The process's Redis client for session keys (SESSION_REDIS_URL or the result
    backend): the one `core.redis_client` builds."""
    return redis_client()


def session_key(session_id: uuid.UUID | str) -> str:
    """The Redis key of a session."""
    return f"session:{session_id}"


def session_document(question: dict[str, Any] | None, users: list[int]) -> dict[str, Any]:
    """A new session's document: no code yet, in the session language."""
    return {"question": question, "code": "", "language": SESSION_LANGUAGE, "users": users}


def write_if_missing(store: SessionStore, session_id: uuid.UUID, document: dict[str, Any]) -> bool:
    """Create the key unless it exists; a live document is never clobbered."""
    return bool(store.set(session_key(session_id), json.dumps(document), nx=True))


def write_missing(store: SessionStore, documents: dict[uuid.UUID, dict[str, Any]]) -> int:
    """Create every key that does not exist yet; returns how many were written."""
    pipe = store.pipeline(transaction=False)
    for session_id, document in documents.items():
        pipe.set(session_key(session_id), json.dumps(document), nx=True)
    return sum(1 for written in pipe.execute() if written)


def replace_users(store: SessionStore, session_id: uuid.UUID, users: list[int]) -> None:
    """Set the document's `users`, keeping everything else the collaboration service wrote.

    Optimistic (WATCH) so a concurrent edit of the code is not lost. A missing key is
    left missing: reconcile rewrites it from PostgreSQL with the current users.
    """
    key = session_key(session_id)

    def update_users(pipe: redis.client.Pipeline) -> None:
        raw = pipe.get(key)
        if raw is None:
            return
        document = json.loads(raw)
        document["users"] = users
        pipe.multi()
        pipe.set(key, json.dumps(document))

    store.transaction(update_users, key)


def delete(store: SessionStore, session_id: uuid.UUID) -> None:
    """Drop an ended session's key."""
    store.delete(session_key(session_id))
