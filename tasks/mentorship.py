"""Mentorship tasks: ranking, selection and requests, lifecycle, unmatch, assignment, upkeep."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from sqlalchemy.orm import Session

from core.settings import get_settings
from domain.mentorship.assignment import AssignResult, assign_mentors
from domain.mentorship.backfill import BackfillResult, backfill_relationships
from domain.mentorship.lifecycle import ExpireResult, SettableStatus, expire_requests, set_status
from domain.mentorship.ranking import RankedMentor, rank_mentors
from domain.mentorship.relationships import RelationshipResult
from domain.mentorship.selection import request_relationship, respond_to_request, select_mentor
from domain.mentorship.stats import RebuildStatsResult, rebuild_stats
from domain.mentorship.unmatch import UnmatchResult, unmatch
from workers.base import NoArgs, TaskArgs, task
from workers.specs import Periodic


class RankArgs(TaskArgs):
    """The mentee to rank mentors for."""

    mentee_id: int = Field(gt=0, description="The mentee looking for a mentor.")


class SelectArgs(TaskArgs):
    """A mentee choosing a mentor."""

    mentee_id: int = Field(gt=0, description="The mentee choosing.")
    mentor_id: int = Field(gt=0, description="The mentor chosen.")


class RequestArgs(TaskArgs):
    """One side asking the other for a mentoring relationship."""

    mentor_id: int = Field(gt=0, description="The mentor of the requested relationship.")
    mentee_id: int = Field(gt=0, description="The mentee of the requested relationship.")
    initiated_by: Literal["mentor", "mentee"] = Field(description="Which side is asking.")


class RespondArgs(TaskArgs):
    """The other side's answer to a pending request."""

    relationship_id: int = Field(gt=0, description="The pending relationship.")
    user_id: int = Field(gt=0, description="The party answering (not the one who asked).")
    accept: bool = Field(description="True to accept (active), false to reject.")


class SetStatusArgs(TaskArgs):
    """A party pausing, resuming or completing a relationship."""

    relationship_id: int = Field(gt=0, description="The relationship to change.")
    user_id: int = Field(gt=0, description="The mentor or mentee making the change.")
    status: SettableStatus = Field(description="active <-> paused; active or paused -> completed.")


class UnmatchArgs(TaskArgs):
    """Either side ending a relationship for good."""

    user_id: int = Field(gt=0, description="The user unmatching (mentor or mentee).")
    other_id: int = Field(gt=0, description="The other side of the relationship.")


class AssignArgs(TaskArgs):
    """How many seeking mentees one assignment run considers."""

    limit: int | None = Field(
        None,
        gt=0,
        description="Consider only this many seeking mentees, earliest joined first; "
        "omit to consider all.",
    )


@task("mentorship.rank", args=RankArgs, result=list[RankedMentor])
def rank_task(session: Session, args: RankArgs) -> list[RankedMentor]:
    """Mentors open to a mentee, by compatibility score desc, then date joined."""
    return rank_mentors(session, args.mentee_id, get_settings().max_mentees)


@task("mentorship.select", args=SelectArgs, result=RelationshipResult)
def select_task(session: Session, args: SelectArgs) -> RelationshipResult:
    """A mentee picks a mentor with room: the relationship is active at once."""
    return select_mentor(
        session, args.mentee_id, args.mentor_id, default_capacity=get_settings().max_mentees
    )


@task("mentorship.request", args=RequestArgs, result=RelationshipResult)
def request_task(session: Session, args: RequestArgs) -> RelationshipResult:
    """Ask for a mentoring relationship; pending until the other side responds."""
    return request_relationship(
        session,
        args.mentor_id,
        args.mentee_id,
        args.initiated_by,
        default_capacity=get_settings().max_mentees,
    )


@task("mentorship.respond", args=RespondArgs, result=RelationshipResult, queue="answers")
def respond_task(session: Session, args: RespondArgs) -> RelationshipResult:
    """Accept (active) or reject a pending request; only the side that did not ask."""
    return respond_to_request(
        session,
        args.relationship_id,
        args.user_id,
        args.accept,
        default_capacity=get_settings().max_mentees,
    )


@task("mentorship.set_status", args=SetStatusArgs, result=RelationshipResult)
def set_status_task(session: Session, args: SetStatusArgs) -> RelationshipResult:
    """Pause, resume or complete a relationship (legal moves only)."""
    return set_status(
        session,
        args.relationship_id,
        args.user_id,
        args.status,
        default_capacity=get_settings().max_mentees,
    )


@task("mentorship.unmatch", args=UnmatchArgs, result=UnmatchResult, queue="cascades")
def unmatch_task(session: Session, args: UnmatchArgs) -> UnmatchResult:
    """End a relationship: completed, mentor blacklisted, chat deleted, event recorded."""
    return unmatch(session, args.user_id, args.other_id)


@task("mentorship.assign", args=AssignArgs, result=AssignResult, queue="sweeps")
def assign_task(session: Session, args: AssignArgs) -> AssignResult:
    """Match seeking mentees to mentors with room, maximising the total score."""
    return assign_mentors(session, default_capacity=get_settings().max_mentees, limit=args.limit)


@task(
    "mentorship.expire",
    args=NoArgs,
    result=ExpireResult,
    queue="sweeps",
    periodic=Periodic("mentorship-expire-requests", every=600.0, expires=540),
    ignore_result=True,
)
def expire_task(session: Session, args: NoArgs) -> ExpireResult:
    """Reject pending requests older than MENTORSHIP_REQUEST_TIMEOUT_SECONDS."""
    return expire_requests(session, get_settings().mentorship_request_timeout_seconds)


@task("mentorship.backfill", args=NoArgs, result=BackfillResult, queue="maintenance")
def backfill_task(session: Session, args: NoArgs) -> BackfillResult:
    """Create active relationships for booked pairs that have none yet."""
    return backfill_relationships(session)


@task("mentorship.rebuild_stats", args=NoArgs, result=RebuildStatsResult, queue="maintenance")
def rebuild_stats_task(session: Session, args: NoArgs) -> RebuildStatsResult:
    """Rewrite mentor_mentee_stats from bookings in one set-based statement."""
    return rebuild_stats(session)
