"""A member leaving a group, and a group being deleted: the membership change, then the cleanup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.audit import record_audit
from core.context import TaskContext, attach_context
from core.db import rowcount
from core.errors import NotFound
from domain.carpool.links import (
    Cause,
    Removal,
    RemovalResult,
    remove_ineligible_links,
    reservations_of,
)
from domain.carpool.locking import lock_carpool_links
from models.carpool import CarpoolGroup, GroupMember, MembershipStatus
from models.users import User


class MemberLeftResult(RemovalResult):
    """The cleanup of one member leaving; `membership_ended` is false if it had already ended."""

    membership_ended: bool


class GroupDeletedResult(RemovalResult):
    """A group's deletion: its closing, then the cleanup of its former members in batches."""

    group_id: int
    group_disabled: bool
    memberships_ended: int
    members: int
    batches: int


def _require_group(session: Session, group_id: int, *, for_update: bool = False) -> None:
    query = select(CarpoolGroup.id).where(CarpoolGroup.id == group_id)
    if for_update:
        query = query.with_for_update()
    if session.scalar(query) is None:
        raise NotFound(f"Group {group_id} not found")


def member_left(session: Session, group_id: int, user_id: int) -> MemberLeftResult:
    """End `user_id`'s membership of `group_id` (if still active) and remove what it justified.

    Removes every invitation and match between the user's reservations and those of users
    no longer eligible for them, keeping links another shared group or network still
    justifies; rebuilds the statistics of every touched reservation. The cleanup runs even
    when the membership had already ended, so a sibling service that ends memberships
    itself can call this afterwards, and a rerun removes nothing more. What changed is
    audited.
    """
    lock_carpool_links(session)
    _require_group(session, group_id)
    if session.get(User, user_id) is None:
        raise NotFound(f"User {user_id} not found")
    ended = session.execute(
        update(GroupMember)
        .where(
            GroupMember.group_id == group_id,
            GroupMember.user_id == user_id,
            GroupMember.status == MembershipStatus.ACTIVE,
        )
        .values(status=MembershipStatus.LEFT)
        .returning(GroupMember.user_id)
    ).first()
    removal = remove_ineligible_links(
        session, reservations_of([user_id]), Cause("member_left", group_id)
    )
    counts = removal.as_dict()
    record_audit(
        session,
        "carpool.member_left",
        {"group_id": group_id, "user_id": user_id},
        {"memberships_ended": int(ended is not None), **counts},
    )
    return {"membership_ended": ended is not None, **counts}


@dataclass(frozen=True)
class GroupClosure:
    """The first step of a group deletion: what it changed and how many members to clean up."""

    newly_disabled: bool
    memberships_ended: int
    members: int


def close_group(session: Session, group_id: int) -> GroupClosure:
    """Disable the group and end all its memberships: eligibility is final after this commits.

    Run in its own transaction before any cleanup batch, so every batch, and every other
    cleanup, judges links by the group's final state. What changed is audited.
    """
    lock_carpool_links(session)
    _require_group(session, group_id, for_update=True)
    disabled = session.execute(
        update(CarpoolGroup)
        .where(CarpoolGroup.id == group_id, CarpoolGroup.disabled.is_(False))
        .values(disabled=True)
        .returning(CarpoolGroup.id)
    ).first()
    ended = session.execute(
        update(GroupMember)
        .where(GroupMember.group_id == group_id, GroupMember.status == MembershipStatus.ACTIVE)
        .values(status=MembershipStatus.LEFT)
    )
    members = session.scalar(
        select(func.count()).select_from(GroupMember).where(GroupMember.group_id == group_id)
    )
    closure = GroupClosure(
        newly_disabled=disabled is not None,
        memberships_ended=rowcount(ended),
        members=int(members or 0),
    )
    record_audit(
        session,
        "carpool.group_deleted",
        {"group_id": group_id},
        {
            "groups_disabled": int(closure.newly_disabled),
            "memberships_ended": closure.memberships_ended,
        },
    )
    return closure


def clean_up_next_members(
    session: Session, group_id: int, after_user_id: int | None, limit: int
) -> tuple[list[int], Removal]:
    """One batch of a group deletion: the next `limit` members by user id (any status) and
    the removal of the links they lost, audited. Keyset order makes a rerun walk the same
    batches."""
    lock_carpool_links(session)
    query = select(GroupMember.user_id).where(GroupMember.group_id == group_id)
    if after_user_id is not None:
        query = query.where(GroupMember.user_id > after_user_id)
    user_ids = list(session.scalars(query.order_by(GroupMember.user_id).limit(limit)))
    if not user_ids:
        return user_ids, Removal()
    removal = remove_ineligible_links(
        session, reservations_of(user_ids), Cause("group_deleted", group_id)
    )
    record_audit(
        session,
        "carpool.group_deleted",
        {"group_id": group_id, "user_ids": user_ids},
        removal.as_dict(),
    )
    return user_ids, removal


def delete_group(
    sessions: sessionmaker[Session],
    group_id: int,
    batch_size: int,
    progress: Callable[[int, int], None],
    context: TaskContext | None = None,
) -> GroupDeletedResult:
    """Disable the group, end its memberships, then clean up its former members in batches.

    Each batch is its own transaction and reports `progress(done, total)`; each
    transaction's audit rows name the task `context`. Killed part-way,
    a rerun finds the group already closed and walks every batch again; links already
    removed are gone, so it removes and announces only what is left.
    """
    with sessions.begin() as session:
        closure = close_group(attach_context(session, context), group_id)
    progress(0, closure.members)
    removal = Removal()
    done, batches, cursor = 0, 0, None
    while True:
        with sessions.begin() as session:
            user_ids, batch = clean_up_next_members(
                attach_context(session, context), group_id, cursor, batch_size
            )
        if not user_ids:
            break
        removal.add(batch)
        done, batches, cursor = done + len(user_ids), batches + 1, user_ids[-1]
        progress(done, closure.members)
    return {
        "group_id": group_id,
        "group_disabled": closure.newly_disabled,
        "memberships_ended": closure.memberships_ended,
        "members": done,
        "batches": batches,
        **removal.as_dict(),
    }
