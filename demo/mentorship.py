"""Mentorship: mentors with a few places, mentees choosing, one unmatch, an assignment run.

Mentors, mentees, compatibility scores and a chat are seeded directly in PostgreSQL, as
the mentoring platform would; everything else goes through the HTTP API: a mentee's
ranked list, two mentees racing for a mentor's last place (one wins, one gets 409), an
unmatch (chat deleted, mentor blacklisted, choosing them again refused with 403), and
an optimal assignment of the mentees still seeking.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select

from core.db import session_factory
from demo.client import ApiClient
from demo.steps import expect, succeeded
from models import MentorBlacklist, MentorMentee, Message, Score, User
from models.mentorship import RelationshipStatus

# name: (places, available)
MENTORS = {"ada": (1, True), "grace": (2, True), "barbara": (1, True), "linus": (3, False)}
# Compatibility of every mentee (rows) with every mentor; the seekers are left to `assign`.
SCORES = {
    "mia": {"ada": 0.95, "grace": 0.80, "barbara": 0.40, "linus": 0.99},
    "noah": {"ada": 0.90, "grace": 0.70},
    "olga": {"barbara": 0.90, "grace": 0.85},
    "paul": {"barbara": 0.80},
    "quinn": {"grace": 0.50},
}
SEEKERS = ("olga", "paul", "quinn")


@dataclass(frozen=True)
class Seeded:
    """Ids of the scenario's people."""

    mentors: dict[str, int]
    mentees: dict[str, int]


def seed() -> Seeded:
    """Create the scenario's users and scores; names are suffixed so reruns never collide."""
    run = uuid.uuid4().hex[:8]
    joined = datetime.now(UTC) - timedelta(days=365)
    with session_factory().begin() as session:
        mentors = {
            name: User(
                email=f"{name}.{run}@mentoring.demo",
                display_name=name.title(),
                role="mentor",
                max_mentees=places,
                mentor_available=available,
                date_joined=joined + timedelta(days=i),
            )
            for i, (name, (places, available)) in enumerate(MENTORS.items())
        }
        mentees = {
            name: User(
                email=f"{name}.{run}@mentoring.demo",
                display_name=name.title(),
                role="mentee",
                seeking_mentor=name in SEEKERS,
            )
            for name in SCORES
        }
        session.add_all([*mentors.values(), *mentees.values()])
        session.flush()
        session.add_all(
            Score(mentee_id=mentees[mentee].id, mentor_id=mentors[mentor].id, score=score)
            for mentee, row in SCORES.items()
            for mentor, score in row.items()
        )
    return Seeded(
        mentors={name: user.id for name, user in mentors.items()},
        mentees={name: user.id for name, user in mentees.items()},
    )


def _refused(answer: dict[str, Any], status: int, step: str) -> str:
    error = answer.get("error") or {}
    expect(
        answer["state"] == "FAILURE" and error.get("status") == status,
        f"{step} is refused with {status}",
        answer=answer,
    )
    return str(error.get("message"))


def _race_for_the_last_place(client: ApiClient, seeded: Seeded) -> dict[str, Any]:
    """Mia and Noah both choose Ada, who has one place, at the same moment."""
    ada = seeded.mentors["ada"]
    racers = ("mia", "noah")
    task_ids = {
        name: client.enqueue(
            "mentorship.select", {"mentee_id": seeded.mentees[name], "mentor_id": ada}
        )
        for name in racers
    }
    answers = {name: client.wait(task_id) for name, task_id in task_ids.items()}
    winners = [name for name, answer in answers.items() if answer["state"] == "SUCCESS"]
    expect(len(winners) == 1, "exactly one of two racers gets Ada's last place", answers=answers)
    (winner,) = winners
    (loser,) = [name for name in racers if name != winner]
    refusal = _refused(answers[loser], 409, f"{loser}'s selection of the full mentor")
    return {"winner": winner, "loser": loser, "refusal": refusal}


def _chat(seeded: Seeded, mentee: str, mentor: str, lines: int) -> None:
    with session_factory().begin() as session:
        a, b = seeded.mentees[mentee], seeded.mentors[mentor]
        session.add_all(
            Message(sender_id=(a, b)[n % 2], receiver_id=(b, a)[n % 2], body=f"message {n}")
            for n in range(lines)
        )


def _messages_between(a: int, b: int) -> int:
    with session_factory().begin() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Message)
                .where(
                    or_(
                        (Message.sender_id == a) & (Message.receiver_id == b),
                        (Message.sender_id == b) & (Message.receiver_id == a),
                    )
                )
            )
            or 0
        )


def _unmatch(client: ApiClient, seeded: Seeded, mentee: str) -> dict[str, Any]:
    """The winner unmatches Ada: chat deleted, Ada blacklisted, choosing her again refused."""
    mentee_id, ada = seeded.mentees[mentee], seeded.mentors["ada"]
    _chat(seeded, mentee, "ada", 6)
    before = _messages_between(mentee_id, ada)
    unmatch = {"user_id": mentee_id, "other_id": ada}
    first = succeeded(client.call("mentorship.unmatch", unmatch), "the unmatch")
    again = succeeded(client.call("mentorship.unmatch", unmatch), "the repeated unmatch")
    expect(again == first, "a repeated unmatch answers the same", first=first, again=again)
    left = _messages_between(mentee_id, ada)
    expect(left == 0, "every message between the two is deleted", left=left)
    with session_factory().begin() as session:
        blacklisted = session.get(MentorBlacklist, (mentee_id, ada)) is not None
    expect(blacklisted, "the unmatched mentor is blacklisted for the mentee")
    reselect = client.call("mentorship.select", {"mentee_id": mentee_id, "mentor_id": ada})
    refusal = _refused(reselect, 403, "choosing the unmatched mentor again")
    return {"messages": f"{before} -> {left}", "blacklisted": True, "choosing_again": refusal}


def _assignment(client: ApiClient, seeded: Seeded) -> dict[str, Any]:
    """Olga, Paul and Quinn are seeking; Grace has 2 places and Barbara 1.

    Best score first would give Barbara to Olga (0.90), leaving Paul, who only suits
    Barbara, without a mentor: 0.90 + 0.50 = 1.40. The optimal assignment gives Olga to
    Grace instead: 0.85 + 0.80 + 0.50 = 2.15, and all three have a mentor.
    """
    result = succeeded(client.call("mentorship.assign"), "the assignment run")
    seekers = [seeded.mentees[name] for name in SEEKERS]
    with session_factory().begin() as session:
        rows = session.execute(
            select(MentorMentee.mentee_id, MentorMentee.mentor_id).where(
                MentorMentee.mentee_id.in_(seekers),
                MentorMentee.status == RelationshipStatus.ACTIVE,
            )
        ).all()
    names = {v: k for k, v in {**seeded.mentors, **seeded.mentees}.items()}
    assigned = {names[mentee]: names[mentor] for mentee, mentor in rows}
    expect(
        assigned == {"olga": "grace", "paul": "barbara", "quinn": "grace"},
        "the seekers get the assignment of highest total score (2.15, greedy: 1.40)",
        assigned=assigned,
    )
    return {"run": result, "ours": assigned}


def run(client: ApiClient) -> dict[str, Any]:
    """Seed a small mentoring platform and drive it through the API."""
    started = time.monotonic()
    seeded = seed()
    ranked = succeeded(
        client.call("mentorship.rank", {"mentee_id": seeded.mentees["mia"]}), "ranking for mia"
    )
    names = {v: k for k, v in seeded.mentors.items()}
    ours = [names[item["mentor_id"]] for item in ranked if item["mentor_id"] in names]
    expect(
        ours == ["ada", "grace", "barbara"],
        "mia's ranking: by score, without unavailable Linus",
        ranking=ours,
    )
    race = _race_for_the_last_place(client, seeded)
    unmatched = _unmatch(client, seeded, race["winner"])
    assignment = _assignment(client, seeded)
    return {
        "ranking for mia": ours,
        "race for ada's last place": race,
        "unmatch": unmatched,
        "assignment": assignment,
        "seconds": round(time.monotonic() - started, 1),
    }
