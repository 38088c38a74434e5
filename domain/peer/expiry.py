"""`peer.expire`: both timeouts, by the database clock, in two set-based statements."""

from __future__ import annotations

from sqlalchemy import (
    BindParameter,
    bindparam,
    case,
    cast,
    distinct,
    false,
    func,
    insert,
    literal_column,
    not_,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from core.audit import record_audit
from core.followups import relay_due, sweep_due
from core.outbox import checked_event_type
from core.results import TaskResult
from core.sql import EMPTY_ARRAY, inline, json_object, seconds_before_now, skip_locked_update
from models.peer import Match, MatchRequest, MatchStatus, RequestStatus
from models.platform import OutboxEvent

REQUEST_EXPIRED = checked_event_type("request.expired")
MATCH_EXPIRED = checked_event_type("match.expired")
_NO_USERS = cast(literal_column("'[]'"), JSONB)

# A pending request expires MATCHING_TIMEOUT_SECONDS after it was made, or after it was
# last requeued (a requeued request keeps its created_at, its place in the pool, but
# gets a full timeout to find its next partner). Rows another transaction holds (a
# sweep claiming them, a cancel) are skipped and picked up by the next run.
_TIMEOUT: BindParameter[int] = bindparam("timeout")
_PENDING = MatchRequest.status == RequestStatus.PENDING
_EXPIRED_REQUESTS = (
    skip_locked_update(
        MatchRequest.id,
        select(MatchRequest.id).where(
            _PENDING,
            MatchRequest.created_at < seconds_before_now(_TIMEOUT),
            or_(
                MatchRequest.requeued_at.is_(None),
                MatchRequest.requeued_at < seconds_before_now(_TIMEOUT),
            ),
        ),
        _PENDING,
    )
    .values(status=RequestStatus.EXPIRED, expired_at=func.now())
    .returning(
        MatchRequest.id,
        MatchRequest.user_id,
        MatchRequest.difficulty,
        MatchRequest.topic,
        MatchRequest.created_at,
    )
    .cte("expired")
)
_REQUESTS_ANNOUNCED = (
    insert(OutboxEvent)
    .from_select(
        ["type", "data"],
        select(
            inline(REQUEST_EXPIRED),
            json_object(
                request_id=_EXPIRED_REQUESTS.c.id,
                user_id=_EXPIRED_REQUESTS.c.user_id,
                difficulty=_EXPIRED_REQUESTS.c.difficulty,
                topic=_EXPIRED_REQUESTS.c.topic,
                created_at=_EXPIRED_REQUESTS.c.created_at,
                reason=inline("matching_timeout"),
            ),
        ),
    )
    .cte("announced")
)
EXPIRE_REQUESTS = (
    select(
        func.count().label("expired"),
        func.coalesce(func.array_agg(_EXPIRED_REQUESTS.c.id), EMPTY_ARRAY).label("request_ids"),
    )
    .select_from(_EXPIRED_REQUESTS)
    .add_cte(_REQUESTS_ANNOUNCED)
)

# A match unconfirmed at its deadline expires: a side that had said yes goes back to
# pending at its original place, the other side's request expires.
_OPEN = Match.status == MatchStatus.PENDING_CONFIRMATION
_EXPIRED_MATCHES = (
    skip_locked_update(
        Match.id, select(Match.id).where(_OPEN, Match.confirm_deadline <= func.now()), _OPEN
    )
    .values(status=MatchStatus.EXPIRED)
    .returning(
        Match.id,
        Match.user_a,
        Match.user_b,
        Match.confirmed_a,
        Match.confirmed_b,
        Match.difficulty,
        Match.topic,
    )
    .cte("expired")
)
_EXPIRED = _EXPIRED_MATCHES.c
_SIDES = union_all(
    select(
        _EXPIRED.id.label("match_id"),
        _EXPIRED.user_a.label("user_id"),
        func.coalesce(_EXPIRED.confirmed_a, false()).label("confirmed"),
    ),
    select(_EXPIRED.id, _EXPIRED.user_b, func.coalesce(_EXPIRED.confirmed_b, false())),
).cte("sides")
_REQUEUED = _SIDES.c.confirmed
_MOVED = (
    update(MatchRequest)
    .where(
        MatchRequest.user_id == _SIDES.c.user_id,
        MatchRequest.match_id == _SIDES.c.match_id,
        MatchRequest.status == RequestStatus.MATCHED,
    )
    .values(
        status=case(
            (_REQUEUED, inline(RequestStatus.PENDING)), else_=inline(RequestStatus.EXPIRED)
        ),
        match_id=case((_REQUEUED, null()), else_=MatchRequest.match_id),
        requeued_at=case((_REQUEUED, func.now()), else_=MatchRequest.requeued_at),
        expired_at=case((_REQUEUED, null()), else_=func.now()),
    )
    .returning(
        _SIDES.c.match_id, MatchRequest.user_id, MatchRequest.topic, _REQUEUED.label("requeued")
    )
    .cte("moved")
)
_MOVED_BY_MATCH = (
    select(
        _MOVED.c.match_id,
        func.jsonb_agg(_MOVED.c.user_id).filter(_MOVED.c.requeued).label("requeued"),
        func.jsonb_agg(_MOVED.c.user_id).filter(not_(_MOVED.c.requeued)).label("expired"),
    )
    .group_by(_MOVED.c.match_id)
    .cte("moved_by_match")
)
_MATCHES_ANNOUNCED = (
    insert(OutboxEvent)
    .from_select(
        ["type", "data"],
        select(
            inline(MATCH_EXPIRED),
            json_object(
                match_id=_EXPIRED.id,
                users=func.jsonb_build_array(_EXPIRED.user_a, _EXPIRED.user_b),
                difficulty=_EXPIRED.difficulty,
                topic=_EXPIRED.topic,
                reason=inline("confirmation_timeout"),
                requeued=func.coalesce(_MOVED_BY_MATCH.c.requeued, _NO_USERS),
                expired=func.coalesce(_MOVED_BY_MATCH.c.expired, _NO_USERS),
            ),
        ).select_from(
            _EXPIRED_MATCHES.outerjoin(_MOVED_BY_MATCH, _MOVED_BY_MATCH.c.match_id == _EXPIRED.id)
        ),
    )
    .cte("announced")
)
EXPIRE_MATCHES = select(
    select(func.count()).select_from(_EXPIRED_MATCHES).scalar_subquery().label("matches_expired"),
    select(func.count())
    .select_from(_MOVED)
    .where(_MOVED.c.requeued)
    .scalar_subquery()
    .label("requeued"),
    select(func.coalesce(func.array_agg(_EXPIRED.id), EMPTY_ARRAY))
    .scalar_subquery()
    .label("match_ids"),
    select(func.array_agg(distinct(_MOVED.c.topic)))
    .where(_MOVED.c.requeued)
    .scalar_subquery()
    .label("requeued_topics"),
).add_cte(_MATCHES_ANNOUNCED)


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
    matches = session.connection().execute(EXPIRE_MATCHES).one()
    requests = session.connection().execute(EXPIRE_REQUESTS, {"timeout": matching_timeout}).one()
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
