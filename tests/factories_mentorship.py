"""Test data for the mentorship domain: mentors, mentees, scores, relationships, chat, bookings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import session_factory
from models import Booking, MentorBlacklist, MentorMentee, Message, Score, User
from tests.factories import make_user


def make_mentor(session: Session, **fields: Any) -> User:
    """An active, available mentor; `max_mentees` unset means the MAX_MENTEES default."""
    return make_user(session, **{"role": "mentor", "mentor_available": True, **fields})


def make_mentee(session: Session, **fields: Any) -> User:
    """An active mentee (not seeking unless told)."""
    return make_user(session, **{"role": "mentee", **fields})


def set_score(session: Session, mentee: User, mentor: User, score: float) -> None:
    """The compatibility score of a pair."""
    session.add(Score(mentee_id=mentee.id, mentor_id=mentor.id, score=score))
    session.flush()


def make_relationship(
    session: Session,
    mentor: User,
    mentee: User,
    status: str = "active",
    initiated_by: str = "mentee",
    **fields: Any,
) -> MentorMentee:
    """A relationship row as a sibling service would write it."""
    relationship = MentorMentee(
        mentor_id=mentor.id,
        mentee_id=mentee.id,
        status=status,
        initiated_by=initiated_by,
        **fields,
    )
    session.add(relationship)
    session.flush()
    return relationship


def blacklist(session: Session, mentee: User, mentor: User) -> None:
    """The mentee unmatched this mentor before."""
    session.add(MentorBlacklist(mentee_id=mentee.id, mentor_id=mentor.id))
    session.flush()


def make_excluded_mentors(session: Session, mentee: User) -> list[User]:
    """One user of every kind `mentorship.rank` and `mentorship.assign` leave out for
    `mentee`: blacklisted by them, full, unavailable, inactive, and not a mentor at all."""
    blacklisted = make_mentor(session)
    blacklist(session, mentee, blacklisted)
    full = make_mentor(session, max_mentees=1)
    make_relationship(session, full, make_mentee(session), status="active")
    unavailable = make_mentor(session, mentor_available=False)
    inactive = make_mentor(session, is_active=False)
    not_a_mentor = make_user(session, role="member")
    return [blacklisted, full, unavailable, inactive, not_a_mentor]


def send_message(session: Session, sender: User, receiver: User, body: str = "hi") -> Message:
    """A chat message."""
    message = Message(sender_id=sender.id, receiver_id=receiver.id, body=body)
    session.add(message)
    session.flush()
    return message


def book(
    session: Session, mentor: User, mentee: User, status: str, booked_date: datetime
) -> Booking:
    """A booked session."""
    booking = Booking(
        mentor_id=mentor.id, mentee_id=mentee.id, status=status, booked_date=booked_date
    )
    session.add(booking)
    session.flush()
    return booking


def find_relationship(session: Session, mentor_id: int, mentee_id: int) -> MentorMentee | None:
    """The pair's relationship as committed now, if there is one."""
    session.expire_all()
    return session.scalars(
        select(MentorMentee).where(
            MentorMentee.mentor_id == mentor_id, MentorMentee.mentee_id == mentee_id
        )
    ).one_or_none()


def relationship_between(session: Session, mentor_id: int, mentee_id: int) -> MentorMentee:
    """The pair's relationship as committed now; it must exist."""
    relationship = find_relationship(session, mentor_id, mentee_id)
    assert relationship is not None, f"no relationship between {mentor_id} and {mentee_id}"
    return relationship


def active_mentees_of(session: Session, mentor_id: int) -> int:
    """The mentor's active relationships as committed now."""
    session.expire_all()
    return int(
        session.scalar(
            select(func.count())
            .select_from(MentorMentee)
            .where(MentorMentee.mentor_id == mentor_id, MentorMentee.status == "active")
        )
        or 0
    )


@contextmanager
def holding_user_row(user_id: int) -> Iterator[Session]:
    """An open transaction holding the users row of `user_id` locked until the block ends.

    Mentorship writes lock the users rows they involve first, so the tasks sent meanwhile
    queue up behind this lock; what the block adds to the session commits as it ends.
    """
    with session_factory().begin() as holder:
        holder.execute(select(User.id).where(User.id == user_id).with_for_update())
        yield holder
