"""Peer practice tasks: request a partner, sweep pools, confirm, expire, cancel, leave."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, cast

from pydantic import Field, StringConstraints
from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from core.db import session_factory
from core.followups import Due, Followup
from core.settings import get_settings
from domain.peer.confirm import PeerConfirmResult, confirm_match
from domain.peer.expiry import PeerExpireResult
from domain.peer.expiry import expire as expire_overdue
from domain.peer.explain import PeerExplainResult, explain_request
from domain.peer.requests import (
    PeerCancelResult,
    PeerRequestResult,
    cancel_request,
    create_request,
)
from domain.peer.rules import TOPIC_MAX_LENGTH, TOPIC_PATTERN, Difficulty
from domain.peer.session_store import session_store
from domain.peer.sessions import PeerLeaveResult, leave_session
from domain.peer.shares import split_topics
from domain.peer.sweep import (
    PeerSweepResult,
    SweepOutcome,
    pending_in_topics,
    sweep_topics,
    waiting_topics,
)
from models import Match, MatchRequest
from models.peer import MatchStatus, RequestStatus
from workers.base import NoArgs, ProgressReporter, TaskArgs, own_transactions_task, task
from workers.specs import Periodic
from workers.triggers import SEND_ERRORS, claim_due_topics, mark_started, send_coalesced

log = logging.getLogger(__name__)

# How soon a sweep that found its topic's pool held by another comes back, at the
# soonest and at the latest (`busy_pool_backoff`); the latest is beat's peer-sweep tick.
BUSY_POOL_FIRST_WAIT = 0.25
BUSY_POOL_LONGEST_WAIT = 10.0

Topic = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=TOPIC_MAX_LENGTH, pattern=TOPIC_PATTERN
    ),
    Field(description="A short topic label such as `arrays` or `dynamic-programming`."),
]
UserId = Annotated[int, Field(gt=0, description="The acting user's id.")]

_PENDING_REQUEST = exists().where(MatchRequest.status == RequestStatus.PENDING)


class PeerRequestArgs(TaskArgs):
    """Ask for a partner in the pool (difficulty, topic)."""

    user_id: UserId
    difficulty: Difficulty
    topic: Topic


class PeerCancelArgs(TaskArgs):
    """Withdraw a pending request."""

    request_id: uuid.UUID
    user_id: UserId


class PeerSweepArgs(TaskArgs):
    """Which pools to sweep; omitted fields mean every value."""

    difficulty: Difficulty | None = None
    topic: Topic | None = None
    topics: list[Topic] | None = Field(
        None,
        min_length=1,
        description="Several topics swept in one transaction (how a sweep of every pool "
        "splits its work); leave out to sweep `topic`, or every pool.",
    )
    due: bool = Field(
        False,
        description="Sweep every topic that commits made due since the last such sweep "
        "(how a commit triggers a sweep); leave out otherwise.",
    )


class PeerConfirmArgs(TaskArgs):
    """One side's answer to a proposed match."""

    match_id: uuid.UUID
    user_id: UserId
    confirmed: bool


class PeerExplainArgs(TaskArgs):
    """The request to explain."""

    request_id: uuid.UUID


class PeerLeaveArgs(TaskArgs):
    """Leave a collaboration session."""

    session_id: uuid.UUID
    user_id: UserId


@task("peer.request", args=PeerRequestArgs, result=PeerRequestResult)
def request_task(session: Session, args: PeerRequestArgs) -> PeerRequestResult:
    """Queue a user for a partner at a difficulty and topic (one open request per user)."""
    return create_request(session, args.user_id, args.difficulty, args.topic)


@task("peer.cancel", args=PeerCancelArgs, result=PeerCancelResult)
def cancel_task(session: Session, args: PeerCancelArgs) -> PeerCancelResult:
    """Cancel the caller's pending request."""
    return cancel_request(session, args.request_id, args.user_id)


# Own transactions: a sweep reserves its share of the cap in a transaction of its own.
# Commits that make requests pending send one sweep of every topic they made due
# (`due`): under load it covers the topics of many commits, so sweeps per request fall
# as the rate rises; in a quiet system it covers the one topic of the one commit. Beat's
# tick, while a request is pending, picks up what a lost trigger left.
@own_transactions_task(
    "peer.sweep",
    args=PeerSweepArgs,
    result=PeerSweepResult,
    queue="sweeps",
    periodic=Periodic("peer-sweep", every=10.0, expires=9),
    work_waiting=select(_PENDING_REQUEST),
    followup=Due.SWEEP,
    followup_args={"due": True},
    ignore_result=True,
)
def sweep_task(reporter: ProgressReporter, args: PeerSweepArgs) -> PeerSweepResult:
    """Pair pending requests pool by pool, oldest first, into matches awaiting confirmation."""
    if args.due:
        return _sweep_due_topics()
    if args.topics is None and args.topic is None:
        # Fan out: a few tasks over shares of whole topics, for any workers to take.
        relax_after = get_settings().peer_relax_after_seconds
        with session_factory().begin() as session:
            shares = split_topics(waiting_topics(session, args.difficulty, relax_after))
        return _fan_out(shares, args.difficulty)
    topics = args.topics or [cast(str, args.topic)]
    if args.topic is not None:
        # From here on, a commit or a held pool queues another sweep of the topic
        # instead of counting on this one, which may already have claimed its requests.
        mark_started(sweep_of(args.topic))
    done = _sweep(topics, args.difficulty)
    _come_back_to_held(done)
    return {"matched": done.matched}


def _sweep_due_topics() -> PeerSweepResult:
    # From here on, a commit queues the next sweep of due topics instead of counting on
    # this one, which takes the topics due so far and may have claimed before it.
    mark_started(sweep_task.spec.followup)
    topics = claim_due_topics()
    if not topics:
        return {"matched": 0}
    try:
        with session_factory().begin() as session:
            # One transaction for them all, unless the backlog is big enough to split.
            shares = split_topics(pending_in_topics(session, topics))
        if len(shares) > 1:
            return _fan_out(shares, None)
        done = _sweep(topics, None)
    except BaseException:
        _due_again(topics)
        raise
    _come_back_to_held(done)
    return {"matched": done.matched}


def _come_back_to_held(done: SweepOutcome) -> None:
    # Another sweep held a pool and may have claimed before this one was queued: come
    # back to each such topic after a wait that grows with the hold (a silent host's
    # transaction holds a pool until the server ends it), in a sweep of that topic
    # alone, so the sweeps of every other topic go on meanwhile.
    if not done.busy:
        return
    try:
        send_coalesced(
            [sweep_of(topic) for topic in done.held_topics],
            countdown=busy_pool_backoff(done.held_for),
        )
    except SEND_ERRORS as exc:
        log.warning("held topics left to beat's safety tick: %s (%s)", done.held_topics, exc)


def _due_again(topics: list[str]) -> None:
    # Taken from the set but not swept (the sweep failed): the next sweep of due topics
    # covers them; if that cannot be sent, beat's safety tick does.
    try:
        send_coalesced([sweep_task.spec.followup], topics)
    except SEND_ERRORS as exc:
        log.warning("topics left to beat's safety tick: %s (%s)", topics, exc)


def _fan_out(shares: list[list[str]], difficulty: str | None) -> PeerSweepResult:
    for share in shares:
        sweep_task.apply_async(kwargs={"difficulty": difficulty, "topics": share})
    return {"matched": 0, "shares": len(shares)}


def _sweep(topics: list[str], difficulty: str | None) -> SweepOutcome:
    settings = get_settings()
    return sweep_topics(
        session_factory(),
        topics=topics,
        difficulty=difficulty,
        max_open_matches=settings.max_concurrent_matches,
        confirm_seconds=settings.confirm_match_timeout_seconds,
        stale_after=settings.task_time_limit,
        relax_after=settings.peer_relax_after_seconds,
    )


def sweep_of(topic: str) -> Followup:
    """A sweep of one topic's pools: how a sweep that found a pool of the topic held by
    another comes back to it later."""
    return Followup(sweep_task.name, (("topic", topic),))


def busy_pool_backoff(held_for: float) -> float:
    """Seconds before a sweep that found its pool held comes back: as long again as the
    holder has held it, between BUSY_POOL_FIRST_WAIT and BUSY_POOL_LONGEST_WAIT.

    A sweep holds a pool for milliseconds, so the first return is soon; a pool held
    longer (a silent host's transaction, until the server ends it) is looked at after
    waits that double, a handful of sweeps in a minute rather than one every few
    hundred milliseconds. The longest wait is beat's safety tick, which sweeps every
    pool as often anyway.
    """
    return min(max(held_for, BUSY_POOL_FIRST_WAIT), BUSY_POOL_LONGEST_WAIT)


@task("peer.confirm", args=PeerConfirmArgs, result=PeerConfirmResult, queue="answers")
def confirm_task(session: Session, args: PeerConfirmArgs) -> PeerConfirmResult:
    """Answer a proposed match; both yes starts a session, a no requeues the partner."""
    return confirm_match(session, args.match_id, args.user_id, args.confirmed, session_store())


# Time alone makes requests and matches overdue (no commit triggers expiry): a tick every
# 5 s keeps a request at most that long past its timeout, while anything can expire.
@task(
    "peer.expire",
    args=NoArgs,
    result=PeerExpireResult,
    queue="sweeps",
    periodic=Periodic("peer-expire", every=5.0, expires=4),
    work_waiting=select(
        or_(_PENDING_REQUEST, exists().where(Match.status == MatchStatus.PENDING_CONFIRMATION))
    ),
    ignore_result=True,
)
def expire_task(session: Session, args: NoArgs) -> PeerExpireResult:
    """Expire stale pending requests and matches not confirmed by their deadline."""
    return expire_overdue(session, matching_timeout=get_settings().matching_timeout_seconds)


@task("peer.explain", args=PeerExplainArgs, result=PeerExplainResult)
def explain_task(session: Session, args: PeerExplainArgs) -> PeerExplainResult:
    """Why a request is not matched yet: its pool place, what holds it back, a wait estimate."""
    settings = get_settings()
    return explain_request(
        session,
        args.request_id,
        max_open_matches=settings.max_concurrent_matches,
        stale_after=settings.task_time_limit,
        relax_after=settings.peer_relax_after_seconds,
    )


@task("peer.leave", args=PeerLeaveArgs, result=PeerLeaveResult)
def leave_task(session: Session, args: PeerLeaveArgs) -> PeerLeaveResult:
    """Leave a collaboration session; the last one out ends it."""
    return leave_session(session, args.session_id, args.user_id, session_store())
