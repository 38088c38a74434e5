"""`peer.explain`: why a request is not matched yet, decided by the sweep's own rules.

A few indexed reads: the request (by primary key), its pool's pending requests (the
partial pool index the sweep reads too), the recent declines among them, what is free of
the open-match cap, `pg_locks`, and the last hour's matches for the estimate; and, when
the request has a partner or relaxation is on, its topic's pending requests. The pool
is paired in memory by the sweep's pairing function, so explain and sweep cannot
disagree on whether the request has a partner; whether that pair fits under the cap,
and relaxation, are decided by replaying the next sweep of the topic
(domain.peer.next_sweep, which says what stays approximate).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy import (
    Float,
    Text,
    bindparam,
    case,
    func,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session, aliased

from core.errors import NotFound
from core.results import TaskResult
from core.sql import EMPTY_ARRAY, epoch_seconds, inline, seconds_before_now
from domain.peer.budget import free_pairs
from domain.peer.declines import recent_declines
from domain.peer.next_sweep import read_topic, swept_requests
from domain.peer.pairing import pair_pool, user_pair
from domain.peer.pool_lock import pool_lock_held
from domain.peer.rules import Difficulty
from domain.peer.stats import DEFAULT_WINDOW_SECONDS, rounded_seconds
from models.peer import Match, MatchRequest, RequestStatus

Reason = Literal[
    "no_partner_in_pool",
    "declined_partners_only",
    "open_match_cap_reached",
    "pool_busy",
    "not_pending",
]
# What keeps a request waiting past the next sweep; a busy pool only delays it.
LASTING_REASONS: frozenset[Reason] = frozenset(
    {"no_partner_in_pool", "declined_partners_only", "open_match_cap_reached"}
)

# The estimate reads at most this many of the pool's latest matches, from the window the
# pool figures use.
ESTIMATE_SAMPLES = 100


class PeerPoolPlace(TaskResult):
    """The explained request's pool and its place in it (`position` is null unless pending)."""

    difficulty: Difficulty
    topic: str
    waiting: int
    position: int | None
    oldest_waiting_seconds: float | None


class PeerExplainResult(TaskResult):
    """Why a request is (not yet) matched."""

    request_id: uuid.UUID
    status: str
    waiting_seconds: float | None
    pool: PeerPoolPlace
    reasons: list[Reason]
    estimated_wait_seconds: float | None


_REQUEST = aliased(MatchRequest, name="r")
_QUEUED = aliased(MatchRequest, name="q")
_QUEUE_ORDER = (_QUEUED.created_at, _QUEUED.id)

# The request and its pool in one statement, so both come from one snapshot: a request
# read as pending is in the pool read with it. How long the request has waited: until
# now while pending, until its match or its expiry after that (unknown once cancelled).
# The pool as the sweep sees it: pending requests oldest first (created_at, then id).
_WAITED_UNTIL = case(
    (inline(RequestStatus.PENDING), func.now()),
    (inline(RequestStatus.MATCHED), Match.created_at),
    (inline(RequestStatus.EXPIRED), _REQUEST.expired_at),
    value=_REQUEST.status,
)
_POOL = (
    select(
        func.count().label("waiting"),
        epoch_seconds(func.now() - func.min(_QUEUED.created_at)).label("oldest_waiting_seconds"),
        func.coalesce(
            func.array_agg(aggregate_order_by(_QUEUED.id, *_QUEUE_ORDER)), EMPTY_ARRAY
        ).label("request_ids"),
        func.coalesce(
            func.array_agg(aggregate_order_by(_QUEUED.user_id, *_QUEUE_ORDER)), EMPTY_ARRAY
        ).label("user_ids"),
        pool_lock_held(_REQUEST.difficulty, _REQUEST.topic).label("busy"),
    )
    .where(
        _QUEUED.difficulty == _REQUEST.difficulty,
        _QUEUED.topic == _REQUEST.topic,
        _QUEUED.status == RequestStatus.PENDING,
    )
    .lateral("pool")
)
REQUEST_AND_POOL = (
    select(
        _REQUEST.id,
        _REQUEST.status,
        _REQUEST.difficulty,
        _REQUEST.topic,
        epoch_seconds(_WAITED_UNTIL - _REQUEST.created_at).label("waiting_seconds"),
        *_POOL.c,
    )
    .select_from(_REQUEST)
    .outerjoin(Match, Match.id == _REQUEST.match_id)
    .join(_POOL, true())
    .where(_REQUEST.id == bindparam("request_id"))
)

# Given the request has waited `waited` seconds: the median of what the pool's recent
# requests that waited longer still had to wait. Unknown (NULL) without such requests.
# The window's matches are found by time (BRIN on created_at) and filtered by pool: a
# read bounded by the window, which keeps an index off the sweep's bulk insert.
_DIFFICULTY = bindparam("difficulty", type_=Text)
_TOPIC = bindparam("topic", type_=Text)
_WAITED = bindparam("waited", type_=Float)
_LATEST = (
    select(Match.created_at, Match.request_a, Match.request_b)
    .where(
        Match.difficulty == _DIFFICULTY,
        Match.topic == _TOPIC,
        Match.created_at > seconds_before_now(bindparam("window")),
    )
    .order_by(Match.created_at.desc())
    .limit(bindparam("samples"))
    .cte("latest")
)
_WAITS = (
    select(epoch_seconds(_LATEST.c.created_at - _REQUEST.created_at).label("seconds"))
    .select_from(_LATEST)
    .join(_REQUEST, _REQUEST.id.in_([_LATEST.c.request_a, _LATEST.c.request_b]))
    .where(_REQUEST.difficulty == _DIFFICULTY, _REQUEST.topic == _TOPIC)
    .cte("waits")
)
REMAINING_WAIT = select(func.percentile_cont(0.5).within_group(_WAITS.c.seconds - _WAITED)).where(
    _WAITS.c.seconds > _WAITED
)


def explain_request(
    session: Session,
    request_id: uuid.UUID,
    *,
    max_open_matches: int,
    stale_after: int,
    relax_after: int | None = None,
) -> PeerExplainResult:
    """Why request `request_id` is (not yet) matched.

    Returns `{"request_id", "status", "waiting_seconds", "pool": {"difficulty", "topic",
    "waiting", "position", "oldest_waiting_seconds"}, "reasons", "estimated_wait_seconds"}`.
    `reasons` lists what holds it back (empty: the next sweep pairs it); the estimate is 0
    when only a busy pool delays it, else the pool's recent time-to-match beyond what the
    request has already waited (null when the pool has no such recent match, and for a
    request no longer pending). NotFound for an unknown request.

    With `relax_after` (PEER_RELAX_AFTER_SECONDS), a request the next sweep would pair
    across adjacent difficulties has no partner reason. `open_match_cap_reached` when
    nothing of `max_open_matches` is free (open matches and sweeps' reservations younger
    than `stale_after` seconds take it all, as the sweep counts them), or when the
    request has a partner but its pair is not among those the free part lets the next
    sweep of its topic keep: the oldest pairs over all the topic's pools.
    """
    request = (
        session.connection().execute(REQUEST_AND_POOL, {"request_id": request_id}).one_or_none()
    )
    if request is None:
        raise NotFound(f"request {request_id} not found")
    pool_key = {"difficulty": request.difficulty, "topic": request.topic}
    pending = request.status == RequestStatus.PENDING
    position = list(request.request_ids).index(request.id) if pending else None
    reasons: list[Reason] = []
    if not pending:
        reasons.append("not_pending")
    else:
        partner = partner_reason(session, list(request.user_ids), position or 0)
        topic = None
        if partner is not None and relax_after is not None:
            # Relaxation may serve it from next door, as the older or the newer request.
            topic = read_topic(session, request.topic)
            if str(request.id) in swept_requests(topic, None, relax_after):
                partner = None
        if partner is not None:
            reasons.append(partner)
        free = free_pairs(session, max_open_matches, stale_after)
        if free <= 0:
            reasons.append("open_match_cap_reached")
        elif partner is None:
            topic = topic or read_topic(session, request.topic)
            # A request gone from the topic since the first read (matched, cancelled by
            # then) is answered as that read found it.
            if topic.holds(str(request.id)) and str(request.id) not in swept_requests(
                topic, free, relax_after
            ):
                reasons.append("open_match_cap_reached")
        if request.busy:
            reasons.append("pool_busy")
    return {
        "request_id": request.id,
        "status": request.status,
        "waiting_seconds": rounded_seconds(request.waiting_seconds),
        "pool": {
            "difficulty": request.difficulty,
            "topic": request.topic,
            "waiting": int(request.waiting),
            "position": None if position is None else position + 1,
            "oldest_waiting_seconds": rounded_seconds(request.oldest_waiting_seconds),
        },
        "reasons": reasons,
        "estimated_wait_seconds": (
            None if not pending else estimate_wait(session, pool_key, request, reasons)
        ),
    }


def partner_reason(session: Session, user_ids: list[int], position: int) -> Reason | None:
    """Pair the pool as the sweep would; None when the request at `position` gets a partner.

    Otherwise `declined_partners_only` when the others the pairing leaves waiting are all
    users the request's user declined or was declined by within the cooldown, else
    `no_partner_in_pool` (nobody else is left: alone, or the compatible requests go to
    older ones).
    """
    declined = recent_declines(session, user_ids)
    paired = {each for pair in pair_pool(user_ids, declined) for each in pair}
    if position in paired:
        return None
    user = user_ids[position]
    left_waiting = [
        other for index, other in enumerate(user_ids) if index not in paired and index != position
    ]
    if left_waiting and all(user_pair(user, other) in declined for other in left_waiting):
        return "declined_partners_only"
    return "no_partner_in_pool"


def estimate_wait(
    session: Session, pool_key: dict[str, str], request: Any, reasons: list[Reason]
) -> float | None:
    """Seconds the pending `request` can expect to wait still (see `explain_request`)."""
    if not LASTING_REASONS.intersection(reasons):
        return 0.0
    remaining = session.connection().scalar(
        REMAINING_WAIT,
        {
            **pool_key,
            "waited": float(request.waiting_seconds),
            "window": DEFAULT_WINDOW_SECONDS,
            "samples": ESTIMATE_SAMPLES,
        },
    )
    return rounded_seconds(remaining)
