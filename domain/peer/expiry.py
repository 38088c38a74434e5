"""`peer.expire`: both timeouts, by the database clock, in two set-based statements."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.audit import record_audit
from core.followups import relay_due, sweep_due
from core.results import TaskResult

# A pending request expires MATCHING_TIMEOUT_SECONDS after it was made, or after it was
# last requeued (a requeued request keeps its created_at, its place in the pool, but
# gets a full timeout to find its next partner). Rows another transaction holds (a
# sweep claiming them, a cancel) are skipped and picked up by the next run.
EXPIRE_REQUESTS = text(
    """
    WITH due AS (
        SELECT id
        FROM match_requests
        WHERE status = 'pending'
          AND created_at < now() - make_interval(secs => :timeout)
          AND (requeued_at IS NULL OR requeued_at < now() - make_interval(secs => :timeout))
        FOR UPDATE SKIP LOCKED
    ),
    expired AS (
        UPDATE match_requests r
        SET status = 'expired', expired_at = now()
        FROM due
        WHERE r.id = due.id AND r.status = 'pending'
        RETURNING r.id, r.user_id, r.difficulty, r.topic, r.created_at
    ),
    announced AS (
        INSERT INTO outbox (type, data)
        SELECT
            'request.expired',
            jsonb_build_object(
                'request_id', id,
                'user_id', user_id,
                'difficulty', difficulty,
                'topic', topic,
                'created_at', created_at,
                'reason', 'matching_timeout'
            )
        FROM expired
    )
    SELECT count(*) AS expired, coalesce(array_agg(id), '{}') AS request_ids FROM expired
    """
)

# A match unconfirmed at its deadline expires: a side that had said yes goes back to
# pending at its original place, the other side's request expires.
EXPIRE_MATCHES = text(
    """
    WITH due AS (
        SELECT id
        FROM matches
        WHERE status = 'pending_confirmation' AND confirm_deadline <= now()
        FOR UPDATE SKIP LOCKED
    ),
    expired AS (
        UPDATE matches m
        SET status = 'expired'
        FROM due
        WHERE m.id = due.id AND m.status = 'pending_confirmation'
        RETURNING m.id, m.user_a, m.user_b, m.confirmed_a, m.confirmed_b, m.difficulty, m.topic
    ),
    sides AS (
        SELECT id AS match_id, user_a AS user_id, coalesce(confirmed_a, false) AS confirmed
        FROM expired
        UNION ALL
        SELECT id, user_b, coalesce(confirmed_b, false) FROM expired
    ),
    moved AS (
        UPDATE match_requests r
        SET status = CASE WHEN s.confirmed THEN 'pending' ELSE 'expired' END,
            match_id = CASE WHEN s.confirmed THEN NULL ELSE r.match_id END,
            requeued_at = CASE WHEN s.confirmed THEN now() ELSE r.requeued_at END,
            expired_at = CASE WHEN s.confirmed THEN NULL ELSE now() END
        FROM sides s
        WHERE r.user_id = s.user_id AND r.match_id = s.match_id AND r.status = 'matched'
        RETURNING s.match_id, r.user_id, r.topic, s.confirmed AS requeued
    ),
    moved_by_match AS (
        SELECT
            match_id,
            jsonb_agg(user_id) FILTER (WHERE requeued) AS requeued,
            jsonb_agg(user_id) FILTER (WHERE NOT requeued) AS expired
        FROM moved
        GROUP BY match_id
    ),
    announced AS (
        INSERT INTO outbox (type, data)
        SELECT
            'match.expired',
            jsonb_build_object(
                'match_id', e.id,
                'users', jsonb_build_array(e.user_a, e.user_b),
                'difficulty', e.difficulty,
                'topic', e.topic,
                'reason', 'confirmation_timeout',
                'requeued', coalesce(b.requeued, CAST('[]' AS jsonb)),
                'expired', coalesce(b.expired, CAST('[]' AS jsonb))
            )
        FROM expired e
        LEFT JOIN moved_by_match b ON b.match_id = e.id
    )
    SELECT
        (SELECT count(*) FROM expired) AS matches_expired,
        (SELECT count(*) FROM moved WHERE requeued) AS requeued,
        (SELECT coalesce(array_agg(id), '{}') FROM expired) AS match_ids,
        (SELECT array_agg(DISTINCT topic) FROM moved WHERE requeued) AS requeued_topics
    """
)


class PeerExpireResult(TaskResult):
    """What one expiry run expired and requeued."""

    requests_expired: int
    matches_expired: int
    requeued: int


def expire(session: Session, *, matching_timeout: int) -> PeerExpireResult:
    """Expire overdue matches (requeueing sides that said yes), then stale pending requests.

    Returns `{"requests_expired", "matches_expired", "requeued"}`; a run that expired
    something is audited with the ids of what it expired.
    """
    matches = session.execute(EXPIRE_MATCHES).one()
    requests = session.execute(EXPIRE_REQUESTS, {"timeout": matching_timeout}).one()
    for topic in matches.requeued_topics or ():
        sweep_due(session, topic)
    if matches.matches_expired or requests.expired:
        relay_due(session)
    counts: PeerExpireResult = {
        "requests_expired": int(requests.expired),
        "matches_expired": int(matches.matches_expired),
        "requeued": int(matches.requeued),
    }
    record_audit(
        session,
        "peer.expire",
        {"request_ids": list(requests.request_ids), "match_ids": list(matches.match_ids)},
        counts,
    )
    return counts
