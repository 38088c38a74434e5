"""Reconcile repairs for peer matching (run by `maintenance.reconcile`)."""

from __future__ import annotations

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from core.sql import skip_locked_update
from domain.peer import session_store
from domain.peer.session_store import SessionStore
from domain.peer.sessions import question_json
from models import CollabSession, Match, MatchRequest, Question
from models.peer import MatchStatus, RequestStatus, SessionStatus

# A request left `matched` to a match that does not exist, or that was cancelled or
# expired without its requests being moved, goes back to pending at its place. Rows
# another transaction holds are left to the next run.
_MATCHED = MatchRequest.status == RequestStatus.MATCHED
REQUEUE_ORPHANED_REQUESTS = skip_locked_update(
    MatchRequest.id,
    select(MatchRequest.id).where(
        _MATCHED,
        ~exists().where(
            Match.id == MatchRequest.match_id,
            Match.status.in_([MatchStatus.PENDING_CONFIRMATION, MatchStatus.CONFIRMED]),
        ),
    ),
    _MATCHED,
    name="orphaned",
    of=MatchRequest,
).values(status=RequestStatus.PENDING, match_id=None, requeued_at=func.now())


def requeue_orphaned_requests(session: Session) -> int:
    """Requests matched to a match that is gone (or cancelled/expired) → pending; how many."""
    return session.connection().execute(REQUEUE_ORPHANED_REQUESTS).rowcount


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
