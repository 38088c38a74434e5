"""Peer practice tasks: request a partner, sweep pools, confirm, expire, cancel, leave."""

from __future__ import annotations

import uuid
from typing import Annotated, cast

from pydantic import Field, StringConstraints
from sqlalchemy.orm import Session

from core.db import session_factory
from core.followups import sweep_followup
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
from domain.peer.sweep import PeerSweepResult, sweep_topics, waiting_topics
from workers.app import app
from workers.base import NoArgs, ProgressReporter, TaskArgs, own_transactions_task, task
from workers.triggers import mark_started, send_coalesced

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
@own_transactions_task("peer.sweep", args=PeerSweepArgs, result=PeerSweepResult, ignore_result=True)
def sweep_task(reporter: ProgressReporter, args: PeerSweepArgs) -> PeerSweepResult:
    """Pair pending requests pool by pool, oldest first, into matches awaiting confirmation."""
    if args.topics is None and args.topic is None:
        # Fan out: a few tasks over shares of whole topics, for any workers to take.
        with session_factory().begin() as session:
            shares = split_topics(waiting_topics(session, args.difficulty))
        for share in shares:
            app.send_task("peer.sweep", kwargs={"difficulty": args.difficulty, "topics": share})
        return {"matched": 0, "shares": len(shares)}
    settings = get_settings()
    followup = None if args.topic is None else sweep_followup(args.topic, args.difficulty)
    if followup is not None:
        # From here on, a commit into the topic queues another sweep instead of counting
        # on this one, which may already have claimed its requests.
        mark_started(followup)
    done = sweep_topics(
        session_factory(),
        topics=args.topics or [cast(str, args.topic)],
        difficulty=args.difficulty,
        max_open_matches=settings.max_concurrent_matches,
        confirm_seconds=settings.confirm_match_timeout_seconds,
        stale_after=settings.task_time_limit,
        relax_after=settings.peer_relax_after_seconds,
    )
    if done.busy and followup is not None:
        # Another sweep holds a pool and may have claimed before this one was queued:
        # come back after it rather than leave the newcomers to beat's safety tick.
        send_coalesced([followup], countdown=busy_pool_backoff(done.held_for))
    return {"matched": done.matched}


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


@task("peer.confirm", args=PeerConfirmArgs, result=PeerConfirmResult)
def confirm_task(session: Session, args: PeerConfirmArgs) -> PeerConfirmResult:
    """Answer a proposed match; both yes starts a session, a no requeues the partner."""
    return confirm_match(session, args.match_id, args.user_id, args.confirmed, session_store())


@task("peer.expire", args=NoArgs, result=PeerExpireResult, ignore_result=True)
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
