"""The two users of a relationship: locking them, reading their state, mentor capacity.

Every mentorship write that can change who is actively matched first locks the users
rows it involves (mentor and mentee) with `FOR NO KEY UPDATE`, always in ascending id
order and in one statement. Capacity and "one active mentor per mentee" are then
counted under those locks, so two selections racing for a mentor's last place, or one
mentee racing two selections, are serialised on the rows that decide them, and the
shared order means they cannot deadlock. `NO KEY UPDATE` (not `UPDATE`) leaves the
foreign-key checks of unrelated inserts (messages, bookings) free to proceed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import ColumnElement, and_, any_, exists, func, literal, select
from sqlalchemy.orm import Session

from core.errors import Conflict, Forbidden, MatchingError, NotFound
from core.sql import id_array
from models import MentorBlacklist, MentorMentee, User
from models.mentorship import RelationshipStatus


@dataclass(frozen=True)
class Party:
    """What the mentorship rules need to know of a locked user."""

    id: int
    role: str
    is_active: bool
    mentor_available: bool
    seeking_mentor: bool
    max_mentees: int | None

    def capacity(self, default_capacity: int) -> int:
        """How many active mentees this mentor may have: `max_mentees`, else the default
        (MAX_MENTEES)."""
        return default_capacity if self.max_mentees is None else self.max_mentees


def mentor_places(default_capacity: int) -> tuple[ColumnElement[int], ColumnElement[int]]:
    """SQL for the `users` row of the enclosing query: (active mentees, capacity).

    Mentees are counted from active relationships, never a stored roster; capacity is
    the user's `max_mentees`, else `default_capacity` (MAX_MENTEES). Ranking and
    assignment both use these, so they agree on who is full.
    """
    taken = (
        select(func.count())
        .select_from(MentorMentee)
        .where(MentorMentee.mentor_id == User.id, MentorMentee.status == RelationshipStatus.ACTIVE)
        .correlate(User)
        .scalar_subquery()
    )
    capacity = func.coalesce(User.max_mentees, literal(default_capacity))
    return taken, capacity


def open_to_mentees(taken: ColumnElement[int], capacity: ColumnElement[int]) -> ColumnElement[bool]:
    """Condition on a `users` row: a mentor who is active, available and not full."""
    return and_(User.role == "mentor", User.is_active, User.mentor_available, taken < capacity)


def lock_parties(session: Session, ids: Iterable[int]) -> dict[int, Party]:
    """Lock the users rows of `ids` until commit, in ascending id order; unknown ids are absent."""
    rows = session.execute(
        select(
            User.id,
            User.role,
            User.is_active,
            User.mentor_available,
            User.seeking_mentor,
            User.max_mentees,
        )
        .where(User.id == any_(id_array("ids", sorted(set(ids)))))
        .order_by(User.id)
        .with_for_update(key_share=True)
    ).all()
    return {
        row.id: Party(
            id=row.id,
            role=row.role,
            is_active=row.is_active,
            mentor_available=row.mentor_available,
            seeking_mentor=row.seeking_mentor,
            max_mentees=row.max_mentees,
        )
        for row in rows
    }


def active_mentee_counts(session: Session, mentor_ids: Iterable[int]) -> dict[int, int]:
    """Active mentee counts of many mentors in one statement (mentors with none are absent)."""
    rows = session.execute(
        select(MentorMentee.mentor_id, func.count())
        .where(
            MentorMentee.mentor_id == any_(id_array("mentor_ids", mentor_ids)),
            MentorMentee.status == RelationshipStatus.ACTIVE,
        )
        .group_by(MentorMentee.mentor_id)
    ).all()
    return {mentor_id: int(count) for mentor_id, count in rows}


def ensure_room(session: Session, mentor: Party, default_capacity: int) -> None:
    """Conflict when the mentor already has as many active mentees as their capacity
    (`max_mentees`, else `default_capacity`) allows."""
    taken = active_mentee_counts(session, [mentor.id]).get(mentor.id, 0)
    capacity = mentor.capacity(default_capacity)
    if taken >= capacity:
        raise Conflict(f"This mentor has no free place: {taken} of {capacity} places are taken")


def active_relationship_of(session: Session, mentee_id: int) -> MentorMentee | None:
    """The mentee's active relationship, if any (there is at most one)."""
    return session.scalars(
        select(MentorMentee).where(
            MentorMentee.mentee_id == mentee_id, MentorMentee.status == RelationshipStatus.ACTIVE
        )
    ).one_or_none()


def pair_relationship(session: Session, mentor_id: int, mentee_id: int) -> MentorMentee | None:
    """The pair's relationship (unique per pair), locked for update."""
    return session.scalars(
        select(MentorMentee)
        .where(MentorMentee.mentor_id == mentor_id, MentorMentee.mentee_id == mentee_id)
        .with_for_update()
    ).one_or_none()


def is_blacklisted(session: Session, mentee_id: int, mentor_id: int) -> bool:
    """Whether the mentee unmatched this mentor before."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    and_(
                        MentorBlacklist.mentee_id == mentee_id,
                        MentorBlacklist.mentor_id == mentor_id,
                    )
                )
            )
        )
    )


def mentor_of(parties: dict[int, Party], mentor_id: int, mentee_id: int) -> Party:
    """The locked mentor of a would-be pair, or the domain error that says why not."""
    mentor = parties.get(mentor_id)
    # A deactivated account is gone for everyone else.
    if mentor is None or not mentor.is_active:
        raise NotFound("Mentor not found")
    if mentor.role != "mentor":
        raise MatchingError("Selected user is not a mentor")
    if mentor_id == mentee_id:
        raise MatchingError("You cannot be your own mentor")
    return mentor


@dataclass(frozen=True)
class LockedRelationship:
    """A relationship locked for a change, with its locked mentor and the caller's side."""

    relationship: MentorMentee
    mentor: Party
    caller_role: Literal["mentor", "mentee"]


def lock_relationship(session: Session, relationship_id: int, user_id: int) -> LockedRelationship:
    """Lock both users of a relationship, then the relationship, for a change by `user_id`.

    NotFound for an unknown relationship, Forbidden when the caller is not one of its parties.
    """
    pair = session.execute(
        select(MentorMentee.mentor_id, MentorMentee.mentee_id).where(
            MentorMentee.id == relationship_id
        )
    ).one_or_none()
    if pair is None:
        raise NotFound("Relationship not found")
    if user_id not in (pair.mentor_id, pair.mentee_id):
        raise Forbidden("You are not part of this relationship")
    # Users first, then the relationship row: the order every mentorship write uses.
    parties = lock_parties(session, (pair.mentor_id, pair.mentee_id))
    relationship = session.scalars(
        select(MentorMentee)
        .where(MentorMentee.id == relationship_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    return LockedRelationship(
        relationship=relationship,
        mentor=parties[relationship.mentor_id],
        caller_role="mentor" if user_id == relationship.mentor_id else "mentee",
    )
