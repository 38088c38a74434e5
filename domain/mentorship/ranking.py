"""Mentors ranked for one mentee by compatibility score."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from core.errors import NotFound
from core.results import TaskResult
from domain.mentorship.parties import mentor_places, open_to_mentees
from models import MentorBlacklist, Score, User


class RankedMentor(TaskResult):
    """One mentor of `mentorship.rank`'s result."""

    mentor_id: int
    email: str
    display_name: str
    score: float
    date_joined: datetime
    current_mentees: int
    capacity: int


def rank_mentors(session: Session, mentee_id: int, default_capacity: int) -> list[RankedMentor]:
    """Mentors open to this mentee, best score first, then longest-standing first.

    Left out: mentors this mentee blacklisted, mentors at capacity, unavailable or
    inactive users, and users who are not mentors. A mentor with no `scores` row for
    this mentee is still listed, with a neutral score of 0.0: a missing score means
    "not computed yet", not "unsuitable". Capacity is the mentor's `max_mentees` or
    MAX_MENTEES; current mentees are counted from active relationships.
    """
    if session.get(User, mentee_id) is None:
        raise NotFound("Mentee not found")
    taken, capacity = mentor_places(default_capacity)
    score = func.coalesce(Score.score, 0.0)
    rows = session.execute(
        select(
            User.id,
            User.email,
            User.display_name,
            score.label("score"),
            User.date_joined,
            taken.label("current_mentees"),
            capacity.label("capacity"),
        )
        .outerjoin(Score, and_(Score.mentor_id == User.id, Score.mentee_id == mentee_id))
        .where(
            open_to_mentees(taken, capacity),
            User.id != mentee_id,
            ~exists().where(
                MentorBlacklist.mentee_id == mentee_id, MentorBlacklist.mentor_id == User.id
            ),
        )
        .order_by(score.desc(), User.date_joined.asc(), User.id.asc())
    ).all()
    return [
        {
            "mentor_id": row.id,
            "email": row.email,
            "display_name": row.display_name,
            "score": float(row.score),
            "date_joined": row.date_joined,
            "current_mentees": int(row.current_mentees),
            "capacity": int(row.capacity),
        }
        for row in rows
    ]
