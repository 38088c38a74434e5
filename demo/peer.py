"""Peer practice: a few hundred people ask for an interview partner.

The peer app's users are seeded directly in PostgreSQL, as that app would; everything
else goes through the HTTP API: every user requests a partner, a sweep pairs them, most
confirm and get a session with a question, some decline (their partner goes back to the
queue at its place and is paired again, never with the one who declined), some let the
confirmation deadline pass (moved into the past here rather than waited for), a few
cancel, and people leave their sessions. The summary counts each outcome.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, insert, select, text, update

from core.db import session_factory
from demo.client import ApiClient
from demo.steps import expect, succeeded
from domain.peer.rules import DECLINE_COOLDOWN_SECONDS
from models import CollabSession, Match, MatchRequest, User
from models.peer import MatchStatus, SessionStatus

USERS = 200
POOLS = (
    ("Easy", "arrays"),
    ("Easy", "strings"),
    ("Medium", "graphs"),
    ("Medium", "hash-tables"),
    ("Hard", "dynamic-programming"),
    ("Hard", "trees"),
)
# How the pairs of the first round answer, by position: most confirm.
ANSWERS = ("both yes",) * 6 + (
    "one says no",
    "one waits, one is silent",
    "nobody answers",
    "both yes",
)
# Calls in flight at once: each waits for its task, as a busy sibling service would.
PARALLEL = 16


def seed_users(count: int) -> list[int]:
    """Create the run's users; the suffix keeps reruns apart."""
    run = uuid.uuid4().hex[:8]
    with session_factory().begin() as session:
        ids = session.scalars(
            insert(User).returning(User.id),
            [
                {"email": f"peer-{run}-{n}@demo.example", "display_name": f"Peer {run} {n}"}
                for n in range(count)
            ],
        ).all()
    return list(ids)


def call_all(client: ApiClient, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run the calls `PARALLEL` at a time; answers in the order of `calls`."""
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda call: client.call(*call), calls))


def open_matches(users: set[int]) -> list[Match]:
    """Matches awaiting confirmation between two of the run's users."""
    with session_factory().begin() as session:
        return list(
            session.scalars(
                select(Match).where(
                    Match.status == MatchStatus.PENDING_CONFIRMATION,
                    Match.user_a.in_(users),
                    Match.user_b.in_(users),
                )
            )
        )


# Two of the run's pending requests that a sweep could still pair: same pool, and
# neither user declined the other within the cooldown.
PAIRABLE_LEFT = text(
    """
    SELECT a.difficulty, a.topic
    FROM match_requests a
    JOIN match_requests b
      ON b.difficulty = a.difficulty AND b.topic = a.topic
     AND b.status = 'pending' AND b.user_id > a.user_id
    WHERE a.status = 'pending'
      AND a.user_id = ANY(:users) AND b.user_id = ANY(:users)
      AND NOT EXISTS (
        SELECT 1 FROM peer_declines d
        WHERE d.user_low = a.user_id AND d.user_high = b.user_id
          AND d.declined_at > now() - make_interval(secs => :cooldown)
      )
    LIMIT 5
    """
)


def sweep_until_paired(client: ApiClient, users: set[int]) -> None:
    """Sweep until no two of the run's pending requests could still be paired.

    Two people left alone in a pool after one declined the other stay apart: that is
    the rule, not a failure. A sweep of every pool fans out into tasks that pair after
    it answers, and commits trigger sweeps too (a pool one holds is skipped), so the
    loop looks a few times.
    """
    for _ in range(20):
        succeeded(client.call("peer.sweep"), "peer.sweep")
        time.sleep(0.5)
        with session_factory().begin() as session:
            pairable = session.execute(
                PAIRABLE_LEFT, {"users": list(users), "cooldown": DECLINE_COOLDOWN_SECONDS}
            ).all()
        if not pairable:
            return
    expect(False, "sweeps pair every pool", pairable=[tuple(row) for row in pairable])


def request(user_id: int, difficulty: str, topic: str) -> tuple[str, dict[str, Any]]:
    """A `peer.request` call."""
    return ("peer.request", {"user_id": user_id, "difficulty": difficulty, "topic": topic})


def confirm(match: Match, user_id: int, answer: bool) -> tuple[str, dict[str, Any]]:
    """A `peer.confirm` call."""
    return ("peer.confirm", {"match_id": str(match.id), "user_id": user_id, "confirmed": answer})


def answer_first_round(
    client: ApiClient, matches: list[Match]
) -> tuple[Counter[str], dict[str, list[Match]]]:
    """Each pair answers as ANSWERS says; returns counts and the matches by outcome."""
    by_outcome: dict[str, list[Match]] = {}
    calls: list[tuple[str, dict[str, Any]]] = []
    for index, match in enumerate(matches):
        outcome = ANSWERS[index % len(ANSWERS)]
        by_outcome.setdefault(outcome, []).append(match)
        if outcome == "both yes":
            calls += [confirm(match, match.user_a, True), confirm(match, match.user_b, True)]
        elif outcome == "one says no":
            calls.append(confirm(match, match.user_b, False))
        elif outcome == "one waits, one is silent":
            calls.append(confirm(match, match.user_a, True))
    answers = [succeeded(answer, "peer.confirm") for answer in call_all(client, calls)]
    found = [a for a in answers if "session_id" in a]
    expect(
        len(found) == len(by_outcome.get("both yes", [])),
        "every pair that said yes twice got one session",
        sessions=len(found),
    )
    cancelled = [a for a in answers if a.get("status") == "cancelled"]
    expect(all(a["requeued_partner"] for a in cancelled), "a no requeues the partner")
    # Answering again changes nothing: the yes that started a session, repeated.
    if found:
        index = answers.index(found[0])
        again = succeeded(client.call(*calls[index]), "a repeated yes")
        expect(again == found[0], "a repeated yes answers the same", again=again)
    counts = Counter({outcome: len(group) for outcome, group in by_outcome.items()})
    counts["sessions with a question"] = sum(1 for a in found if a["question_id"] is not None)
    return counts, by_outcome


def cancel_in_empty_pools(client: ApiClient, users: list[int]) -> None:
    """People in pools of their own give up before anyone comes."""
    for user_id in users:
        topic = f"rare-{uuid.uuid4().hex[:8]}"
        lonely = succeeded(client.call(*request(user_id, "Easy", topic)), "a lonely request")
        succeeded(
            client.call("peer.cancel", {"request_id": lonely["request_id"], "user_id": user_id}),
            "peer.cancel",
        )


def let_deadlines_pass(client: ApiClient, matches: list[Match]) -> None:
    """Move the matches' deadlines into the past (rather than wait), then run expiry."""
    with session_factory().begin() as session:
        session.execute(
            update(Match)
            .where(Match.id.in_([m.id for m in matches]))
            .values(confirm_deadline=func.now() - func.make_interval(0, 0, 0, 0, 0, 0, 1))
        )
    succeeded(client.call("peer.expire"), "peer.expire")


def leave_some_sessions(client: ApiClient, users: set[int]) -> list[dict[str, Any]]:
    """One partner leaves a quarter of the sessions; in half of those, both leave."""
    with session_factory().begin() as session:
        sessions = list(
            session.scalars(
                select(CollabSession)
                .where(CollabSession.status == SessionStatus.ACTIVE)
                .where(CollabSession.user_ids.overlap(list(users)))
                .order_by(CollabSession.created_at)
            )
        )
    leaving = sessions[: len(sessions) // 4]
    leaves = [("peer.leave", {"session_id": str(s.id), "user_id": s.user_ids[0]}) for s in leaving]
    leaves += [
        ("peer.leave", {"session_id": str(s.id), "user_id": s.user_ids[1]})
        for s in leaving[: len(leaving) // 2]
    ]
    return [succeeded(answer, "peer.leave") for answer in call_all(client, leaves)]


def request_statuses(users: set[int]) -> dict[str, int]:
    """How many of the users' requests are in each status."""
    with session_factory().begin() as session:
        return {
            status: count
            for status, count in session.execute(
                select(MatchRequest.status, func.count())
                .where(MatchRequest.user_id.in_(users))
                .group_by(MatchRequest.status)
                .order_by(MatchRequest.status)
            ).tuples()
        }


def run(client: ApiClient) -> dict[str, Any]:
    """Drive the peer flow end to end; raise on the first surprise."""
    users = seed_users(USERS + 3)
    people, loners = users[:USERS], users[USERS:]
    everyone = set(users)

    requested = call_all(
        client,
        [request(user_id, *POOLS[n % len(POOLS)]) for n, user_id in enumerate(people)],
    )
    for answer in requested:
        succeeded(answer, "peer.request")
    duplicate = client.call(*request(people[0], "Hard", "graphs"))
    expect(
        duplicate.get("error", {}).get("message") == "duplicate request",
        "a second open request is refused",
        answer=duplicate,
    )
    cancel_in_empty_pools(client, loners)

    sweep_until_paired(client, everyone)
    first_round = open_matches(everyone)
    expect(len(first_round) >= USERS // 2 - len(POOLS), "the sweep pairs nearly everyone")
    counts, by_outcome = answer_first_round(client, first_round)
    patient = by_outcome.get("one waits, one is silent", [])
    let_deadlines_pass(client, patient + by_outcome.get("nobody answers", []))

    # The declined and the patient are back in their pools; the decliners queue again.
    declined = by_outcome.get("one says no", [])
    decliners = {m.user_b: m.user_a for m in declined}
    requeued = {m.user_a for m in declined} | {m.user_a for m in patient}
    for answer in call_all(client, [request(m.user_b, m.difficulty, m.topic) for m in declined]):
        succeeded(answer, "a decliner queueing again")
    sweep_until_paired(client, everyone)
    second_round = [m for m in open_matches(everyone) if {m.user_a, m.user_b} & requeued]
    expect(
        not any(
            decliners.get(m.user_a) == m.user_b or decliners.get(m.user_b) == m.user_a
            for m in open_matches(everyone)
        ),
        "nobody is paired again with someone who declined them",
    )
    for answer in call_all(
        client,
        [confirm(m, user, True) for m in second_round for user in (m.user_a, m.user_b)],
    ):
        succeeded(answer, "a second-round yes")

    left = leave_some_sessions(client, everyone)
    return {
        "users": len(users),
        "requests": len(requested) + len(loners) + len(declined),
        "refused as duplicate": 1,
        "cancelled before a partner came": len(loners),
        "first-round matches": len(first_round),
        "confirmed by both (sessions)": counts["both yes"],
        "sessions with a question": counts["sessions with a question"],
        "declined": counts["one says no"],
        "timed out, one side had said yes": counts["one waits, one is silent"],
        "timed out, nobody answered": counts["nobody answers"],
        "requeued partners": len(requeued),
        "requeued partners paired again": len(second_round),
        "left a session": len(left),
        "sessions ended by the last one out": sum(1 for r in left if r["status"] == "ended"),
        "requests by status now": request_statuses(everyone),
    }
