"""`mentorship.assign`: match seeking mentees to mentors with room, maximising total score."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import any_, exists, func, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.audit import record_audit
from core.locks import hold_advisory_lock
from core.outbox import emit_events
from core.results import TaskResult
from core.sql import id_array
from domain.mentorship.parties import (
    active_mentee_counts,
    lock_parties,
    mentor_places,
    open_to_mentees,
)
from domain.mentorship.relationships import matched_payload
from domain.mentorship.solver import best_assignment
from models import MentorBlacklist, MentorMentee, Score, User
from models.mentorship import RelationshipStatus

# Two assignment runs take turns, so the second plans with the first one's matches
# already committed.
ASSIGN_LOCK = "matchops.mentorship.assign"


@dataclass(frozen=True)
class Pair:
    """A planned match."""

    mentee_id: int
    mentor_id: int
    score: float


@dataclass(frozen=True)
class Candidates:
    """Every candidate pair as parallel arrays, and the free places of each open mentor."""

    mentee_ids: NDArray[np.int64]
    mentor_ids: NDArray[np.int64]
    scores: NDArray[np.float64]
    room: dict[int, int]


class AssignResult(TaskResult):
    """The result of `mentorship.assign`."""

    assigned: int
    total_score: float


def assign_mentors(
    session: Session, *, default_capacity: int, limit: int | None = None
) -> AssignResult:
    """Match seeking mentees to mentors with an assignment of maximum total score.

    Seeking mentees: `seeking_mentor`, active, no active mentor; with `limit`, only the
    `limit` who joined first are considered. Candidates are pairs with a positive
    `scores` row, leaving out what `mentorship.rank` leaves out (blacklisted pairs,
    mentors full, unavailable, inactive or not mentors) and pairs that already have a
    relationship (a rejected or ended relationship is not resurrected by the system).
    The plan is made without locks; then the involved users are locked, capacity and
    "no active mentor" are checked again, and pairs that no longer fit are dropped
    (lowest score first) before the relationships are written, and audited.
    """
    hold_advisory_lock(session, ASSIGN_LOCK)
    found = find_candidates(session, default_capacity=default_capacity, limit=limit)
    chosen = best_assignment(found.mentee_ids, found.mentor_ids, found.scores, found.room)
    plan = [
        Pair(int(found.mentee_ids[i]), int(found.mentor_ids[i]), float(found.scores[i]))
        for i in chosen.tolist()
    ]
    written = _write_relationships(session, still_fitting(session, plan, default_capacity))
    counts: AssignResult = {
        "assigned": len(written),
        "total_score": round(sum(pair.score for pair in written), 9),
    }
    record_audit(
        session,
        "mentorship.assign",
        {"pairs": [{"mentee_id": p.mentee_id, "mentor_id": p.mentor_id} for p in written]},
        counts,
    )
    return counts


def find_candidates(
    session: Session, *, default_capacity: int, limit: int | None = None
) -> Candidates:
    """The candidate pairs of an assignment run, read without locks; a mentor's capacity
    is `max_mentees`, else `default_capacity`.

    Three plain statements (seeking mentees, open mentors, their scored pairs) rather
    than one large join: each has a plan that stays cheap whatever the row estimates,
    and the pairs come back as three arrays, not 250,000 row objects.
    """
    seeking = seeking_mentees(session, limit)
    room = open_mentors(session, default_capacity)
    nothing = Candidates(
        np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64), room
    )
    if not seeking or not room:
        return nothing
    pairs = (
        select(Score.mentee_id, Score.mentor_id, Score.score)
        .where(
            Score.mentee_id == any_(id_array("seeking", seeking)),
            Score.mentor_id == any_(id_array("open_mentors", room.keys())),
            Score.score > 0,
            Score.mentee_id != Score.mentor_id,
            ~exists().where(
                MentorBlacklist.mentee_id == Score.mentee_id,
                MentorBlacklist.mentor_id == Score.mentor_id,
            ),
            ~exists().where(
                MentorMentee.mentee_id == Score.mentee_id,
                MentorMentee.mentor_id == Score.mentor_id,
            ),
        )
        .subquery("pairs")
    )
    mentee_ids, mentor_ids, scores = session.execute(
        select(
            func.array_agg(pairs.c.mentee_id),
            func.array_agg(pairs.c.mentor_id),
            func.array_agg(pairs.c.score),
        )
    ).one()
    if mentee_ids is None:
        return nothing
    return Candidates(
        np.asarray(mentee_ids, dtype=np.int64),
        np.asarray(mentor_ids, dtype=np.int64),
        np.asarray(scores, dtype=np.float64),
        room,
    )


def seeking_mentees(session: Session, limit: int | None) -> list[int]:
    """Active users seeking a mentor who have none, earliest joined first, up to `limit`."""
    return list(
        session.scalars(
            select(User.id)
            .where(
                User.seeking_mentor,
                User.is_active,
                ~exists().where(
                    MentorMentee.mentee_id == User.id,
                    MentorMentee.status == RelationshipStatus.ACTIVE,
                ),
            )
            .order_by(User.date_joined, User.id)
            .limit(limit)
        )
    )


def open_mentors(session: Session, default_capacity: int) -> dict[int, int]:
    """Free places of every mentor open to mentees (the mentors `mentorship.rank` lists)."""
    taken, capacity = mentor_places(default_capacity)
    rows = session.execute(
        select(User.id, capacity - taken).where(open_to_mentees(taken, capacity))
    ).all()
    return {mentor_id: int(places) for mentor_id, places in rows}


def still_fitting(session: Session, plan: Iterable[Pair], default_capacity: int) -> list[Pair]:
    """The planned pairs that still fit once their users are locked.

    A selection committed since the plan was read may have taken a mentor's place or
    given a mentee a mentor; such pairs are dropped, a full mentor's lowest scores first.
    The blacklist needs no second look: only an unmatch adds to it, an unmatch needs a
    relationship of the pair, and pairs with any relationship were never candidates.
    """
    pairs = sorted(plan, key=lambda pair: pair.score, reverse=True)
    if not pairs:
        return []
    mentor_ids = {pair.mentor_id for pair in pairs}
    mentee_ids = {pair.mentee_id for pair in pairs}
    parties = lock_parties(session, mentor_ids | mentee_ids)
    taken = active_mentee_counts(session, mentor_ids)
    matched = set(
        session.scalars(
            select(MentorMentee.mentee_id).where(
                MentorMentee.mentee_id == any_(id_array("mentee_ids", mentee_ids)),
                MentorMentee.status == RelationshipStatus.ACTIVE,
            )
        )
    )
    room: dict[int, int] = {}
    for mentor_id in mentor_ids:
        mentor = parties.get(mentor_id)
        if mentor is None or not (mentor.is_active and mentor.mentor_available):
            room[mentor_id] = 0
        else:
            room[mentor_id] = mentor.capacity(default_capacity) - taken.get(mentor_id, 0)
    fitting = []
    for pair in pairs:
        mentee = parties.get(pair.mentee_id)
        if mentee is None or not (mentee.is_active and mentee.seeking_mentor):
            continue
        if pair.mentee_id in matched or room[pair.mentor_id] <= 0:
            continue
        room[pair.mentor_id] -= 1
        fitting.append(pair)
    return fitting


def _write_relationships(session: Session, pairs: list[Pair]) -> list[Pair]:
    """Insert the active relationships (one INSERT) and their events (one bulk insert).

    ON CONFLICT DO NOTHING skips a pair that another writer gave a relationship
    meanwhile; the pairs actually written are returned.
    """
    if not pairs:
        return []
    planned = select(
        func.unnest(id_array("mentor_ids", [p.mentor_id for p in pairs])).label("mentor_id"),
        func.unnest(id_array("mentee_ids", [p.mentee_id for p in pairs])).label("mentee_id"),
    ).subquery("planned")
    rows = session.execute(
        insert(MentorMentee)
        .from_select(
            ["mentor_id", "mentee_id", "status", "initiated_by", "accepted_at"],
            select(
                planned.c.mentor_id,
                planned.c.mentee_id,
                literal(RelationshipStatus.ACTIVE, MentorMentee.status.type),
                literal("system"),
                func.now(),
            ),
        )
        .on_conflict_do_nothing()
        .returning(MentorMentee.id, MentorMentee.mentor_id, MentorMentee.mentee_id)
    ).all()
    emit_events(
        session,
        "mentorship.matched",
        [matched_payload(row.id, row.mentor_id, row.mentee_id, "system", "assign") for row in rows],
    )
    by_pair = {(p.mentee_id, p.mentor_id): p for p in pairs}
    return [by_pair[(row.mentee_id, row.mentor_id)] for row in rows]
