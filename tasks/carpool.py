"""Carpool tasks: membership cascades, the periodic cleanup and the statistics rebuild."""

from __future__ import annotations

from pydantic import Field
from sqlalchemy.orm import Session

from core.db import session_factory
from core.results import TaskResult
from domain.carpool.membership import (
    GroupDeletedResult,
    MemberLeftResult,
    delete_group,
    member_left,
)
from domain.carpool.stats import rebuild_stats
from domain.carpool.sweep import CleanupResult, clean_up_searching_reservations
from workers.base import ProgressReporter, TaskArgs, own_transactions_task, task
from workers.specs import Periodic

# Members cleaned up per transaction when a group is deleted: small enough that one
# batch holds the carpool lock for milliseconds, large enough to stay set-based.
GROUP_DELETION_BATCH = 500


# Searching reservations checked per transaction by the periodic cleanup: one batch holds
# the carpool lock, which every membership cleanup waits for, so a batch is sized to hold
# it for a fraction of a second while staying set-based.
CLEANUP_BATCH = 1_000


class MemberLeftArgs(TaskArgs):
    """A member leaving a group."""

    group_id: int = Field(gt=0, description="The group the user leaves.")
    user_id: int = Field(gt=0, description="The user leaving it.")


class GroupDeletedArgs(TaskArgs):
    """A group being deleted."""

    group_id: int = Field(gt=0, description="The group to disable.")
    batch_size: int = Field(
        GROUP_DELETION_BATCH,
        ge=1,
        le=10_000,
        description="Former members cleaned up per transaction.",
    )


class CleanupArgs(TaskArgs):
    """How the periodic cleanup walks the searching reservations."""

    batch_size: int = Field(
        CLEANUP_BATCH,
        ge=1,
        le=50_000,
        description="Searching reservations checked per transaction.",
    )


class RebuildStatsArgs(TaskArgs):
    """Which reservations' statistics to rewrite."""

    reservation_ids: list[int] | None = Field(
        None,
        min_length=1,
        description="Reservations to rebuild; omit to rebuild every reservation.",
    )


class ReservationStatsResult(TaskResult):
    """Rows of `reservation_stats` written."""

    reservations_written: int


@task("carpool.member_left", args=MemberLeftArgs, result=MemberLeftResult, queue="cascades")
def member_left_task(session: Session, args: MemberLeftArgs) -> MemberLeftResult:
    """End a membership and remove the invitations and matches it alone justified."""
    return member_left(session, args.group_id, args.user_id)


@own_transactions_task(
    "carpool.group_deleted", args=GroupDeletedArgs, result=GroupDeletedResult, queue="cascades"
)
def group_deleted_task(reporter: ProgressReporter, args: GroupDeletedArgs) -> GroupDeletedResult:
    """Disable a group, end its memberships and clean up its former members in batches."""
    return delete_group(
        session_factory(), args.group_id, args.batch_size, reporter.progress, reporter.context
    )


@own_transactions_task(
    "carpool.cleanup_invitations",
    args=CleanupArgs,
    result=CleanupResult,
    queue="cascades",
    periodic=Periodic("carpool-cleanup-invitations", every=3600.0, expires=3300),
    ignore_result=True,
)
def cleanup_invitations_task(reporter: ProgressReporter, args: CleanupArgs) -> CleanupResult:
    """Remove invitations and matches of searching reservations between ineligible users."""
    return clean_up_searching_reservations(
        session_factory(), args.batch_size, reporter.progress, reporter.context
    )


@task(
    "carpool.rebuild_stats",
    args=RebuildStatsArgs,
    result=ReservationStatsResult,
    queue="maintenance",
)
def rebuild_stats_task(session: Session, args: RebuildStatsArgs) -> ReservationStatsResult:
    """Rewrite reservation_stats for the given reservations, or all of them."""
    return {"reservations_written": rebuild_stats(session, args.reservation_ids)}
