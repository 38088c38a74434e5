"""Mentorship tasks: ranking, selection and requests, lifecycle, unmatch, assignment, upkeep."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from sqlalchemy.orm import Session

from domain.mentorship.assignment import assign_mentors
from domain.mentorship.backfill import backfill_relationships
from domain.mentorship.lifecycle import SettableStatus, expire_requests, set_status
from domain.mentorship.ranking import rank_mentors
from domain.mentorship.selection import request_relationship, respond_to_request, select_mentor
from domain.mentorship.stats import rebuild_stats
from domain.mentorship.unmatch import unmatch
from workers.base import NoArgs, TaskArgs, task


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


@task("mentorship.rank", args=RankArgs)
def rank(session: Session, args: RankArgs) -> list[dict[str, Any]]:
    """Mentors open to a mentee, by compatibility score desc, then date joined."""
    return rank_mentors(session, args.mentee_id)


@task("mentorship.select", args=SelectArgs)
def select(session: Session, args: SelectArgs) -> dict[str, Any]:
    """A mentee picks a mentor with room: the relationship is active at once."""
    return select_mentor(session, args.mentee_id, args.mentor_id)


@task("mentorship.request", args=RequestArgs)
def request(session: Session, args: RequestArgs) -> dict[str, Any]:
    """Ask for a mentoring relationship; pending until the other side responds."""
    return request_relationship(session, args.mentor_id, args.mentee_id, args.initiated_by)


@task("mentorship.respond", args=RespondArgs)
def respond(session: Session, args: RespondArgs) -> dict[str, Any]:
    """Accept (active) or reject a pending request; only the side that did not ask."""
    return respond_to_request(session, args.relationship_id, args.user_id, args.accept)


@task("mentorship.set_status", args=SetStatusArgs)
def change_status(session: Session, args: SetStatusArgs) -> dict[str, Any]:
    """Pause, resume or complete a relationship (legal moves only)."""
    return set_status(session, args.relationship_id, args.user_id, args.status)


@task("mentorship.unmatch", args=UnmatchArgs)
def unmatch_task(session: Session, args: UnmatchArgs) -> dict[str, Any]:
    """End a relationship: completed, mentor blacklisted, chat deleted, event recorded."""
    return unmatch(session, args.user_id, args.other_id)


@task("mentorship.assign", args=AssignArgs)
def assign(session: Session, args: AssignArgs) -> dict[str, Any]:
    """Match seeking mentees to mentors with room, maximising the total score."""
    return assign_mentors(session, args.limit)


@task("mentorship.expire", args=NoArgs, ignore_result=True)
def expire(session: Session, args: NoArgs) -> dict[str, int]:
    """Reject pending requests older than MENTORSHIP_REQUEST_TIMEOUT_SECONDS."""
    return expire_requests(session)


@task("mentorship.backfill", args=NoArgs)
def backfill(session: Session, args: NoArgs) -> dict[str, int]:
    """Create active relationships for booked pairs that have none yet."""
    return backfill_relationships(session)


@task("mentorship.rebuild_stats", args=NoArgs)
def rebuild(session: Session, args: NoArgs) -> dict[str, int]:
    """Rewrite mentor_mentee_stats from bookings in one set-based statement."""
    return rebuild_stats(session)
