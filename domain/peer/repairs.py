"""Reconcile repairs for peer matching (run by `maintenance.reconcile`)."""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.db import rowcount
from domain.peer import session_store
from domain.peer.session_store import SessionStore
from domain.peer.sessions import question_json
from models.peer import CollabSession, Question, SessionStatus

# A request left `matched` to a match that does not exist, or that was cancelled or
# expired without its requests being moved, goes back to pending at its place. Rows
# another transaction holds are left to the next run.
REQUEUE_ORPHANED_REQUESTS = text(
    """
    WITH orphaned AS (
        SELECT r.id
        FROM match_requests r
        WHERE r.status = 'matched'
          AND NOT EXISTS (
            SELECT 1 FROM matches m
            WHERE m.id = r.match_id AND m.status IN ('pending_confirmation', 'confirmed')
          )
        FOR UPDATE OF r SKIP LOCKED
    )
    UPDATE match_requests r
    SET status = 'pending', match_id = NULL, requeued_at = now()
    FROM orphaned
    WHERE r.id = orphaned.id AND r.status = 'matched'
    """
)


def requeue_orphaned_requests(session: Session) -> int:
    """Requests matched to a match that is gone (or cancelled/expired) → pending; how many."""
    return rowcount(session.execute(REQUEUE_ORPHANED_REQUESTS))


def restore_session_keys(session: Session, store: SessionStore) -> int:
    """Rewrite, in `store`, the document of every active session whose key is missing.

    Returns how many it rewrote.
    """
    # Shared row locks: a leave (which rewrites or deletes the key after it commits)
    # waits for this repair, so a document is never restored for a session that just
    # ended. Sessions being left right now are skipped; their leave writes the key.
    rows = session.execute(
        select(CollabSession.id, CollabSession.user_ids, Question)
        .outerjoin(Question, Question.id == CollabSession.question_id)
        .where(CollabSession.status == SessionStatus.ACTIVE)
        .with_for_update(read=True, skip_locked=True, of=CollabSession)
    ).all()
    documents = {
        row.id: session_store.session_document(question_json(row.Question), list(row.user_ids))
        for row in rows
    }
    return session_store.write_missing(store, documents)
