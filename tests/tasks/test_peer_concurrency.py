"""Several worker processes sweep the same pools while requests keep arriving; an audit
of the result proves no request is in two matches and nobody is paired with themself."""

from __future__ import annotations

import itertools
from contextlib import ExitStack

from sqlalchemy import text

from core.errors import MatchingError
from tests.factories import make_user, unique
from tests.support import running_worker, send


def in_two_open_matches(side_a: str, side_b: str) -> str:
    """Values of a match's two sides (requests, users) found in more than one open match."""
    return f"""
        SELECT side FROM matches
        CROSS JOIN LATERAL (VALUES ({side_a}), ({side_b})) AS sides(side)
        WHERE topic = ANY(:topics) AND status = 'pending_confirmation'
        GROUP BY side HAVING count(*) > 1
    """


AUDIT = {
    "requests in more than one open match": in_two_open_matches("request_a", "request_b"),
    "users paired with themselves": """
        SELECT id FROM matches WHERE topic = ANY(:topics) AND user_a = user_b
    """,
    "users with more than one open match": in_two_open_matches("user_a", "user_b"),
    "matches whose requests do not point back at them": """
        SELECT m.id FROM matches m
        LEFT JOIN match_requests a ON a.id = m.request_a
        LEFT JOIN match_requests b ON b.id = m.request_b
        WHERE m.topic = ANY(:topics)
          AND (a.match_id IS DISTINCT FROM m.id OR b.match_id IS DISTINCT FROM m.id
               OR a.status <> 'matched' OR b.status <> 'matched'
               OR a.user_id <> m.user_a OR b.user_id <> m.user_b
               OR a.topic <> m.topic OR b.topic <> m.topic
               OR a.difficulty <> m.difficulty OR b.difficulty <> m.difficulty)
    """,
    "matched requests without their match": """
        SELECT r.id FROM match_requests r
        WHERE r.topic = ANY(:topics) AND r.status = 'matched'
          AND NOT EXISTS (
            SELECT 1 FROM matches m
            WHERE m.id = r.match_id AND r.id IN (m.request_a, m.request_b)
          )
    """,
    "pools left with two or more pending requests": """
        SELECT difficulty, topic FROM match_requests
        WHERE topic = ANY(:topics) AND status = 'pending'
        GROUP BY difficulty, topic HAVING count(*) > 1
    """,
}


def test_many_workers_sweeping_while_requests_arrive_never_double_match(worker, db):
    topics = [unique("topic"), unique("topic")]
    pools = list(itertools.product(("Easy", "Hard"), topics))
    users = [make_user(db).id for _ in range(240)]
    db.commit()

    sent = []
    with ExitStack() as stack:
        for name in ("peer-sweeper-1", "peer-sweeper-2"):
            stack.enter_context(running_worker(name, concurrency=2))
        for round_number, start in enumerate(range(0, len(users), 24)):
            batch = users[start : start + 24]
            for index, user_id in enumerate(batch):
                difficulty, topic = pools[(index + round_number) % len(pools)]
                sent.append(
                    send("peer.request", user_id=user_id, difficulty=difficulty, topic=topic)
                )
            # A redelivered request racing the original: refused as a duplicate.
            sent.append(send("peer.request", user_id=batch[0], difficulty="Easy", topic=topics[0]))
            for difficulty, topic in pools:
                sent.append(send("peer.sweep", difficulty=difficulty, topic=topic))
            sent.extend(send("peer.sweep") for _ in range(3))
        outcomes = []
        for result in sent:
            try:
                outcomes.append(result.get(timeout=120))
            except MatchingError as refused:
                outcomes.append(str(refused))
        # Whatever the race left behind, a last sweep of each pool finishes the job.
        for difficulty, topic in pools:
            outcomes.append(send("peer.sweep", difficulty=difficulty, topic=topic).get(timeout=60))

    assert outcomes.count("duplicate request") == len(users) // 24
    matched = sum(o["matched"] for o in outcomes if isinstance(o, dict) and "matched" in o)
    for problem, query in AUDIT.items():
        rows = db.execute(text(query), {"topics": topics}).all()
        assert rows == [], f"{problem}: {rows}"
    requests, waiting, matches = db.execute(
        text(
            "SELECT count(*), count(*) FILTER (WHERE status = 'pending'), "
            "       (SELECT count(*) FROM matches WHERE topic = ANY(:topics)) "
            "FROM match_requests WHERE topic = ANY(:topics)"
        ),
        {"topics": topics},
    ).one()
    assert requests == len(users)
    assert matches == (len(users) - waiting) // 2
    # Global sweeps fan out into sweeps per topic, whose results nobody collects here:
    # they made the matches the pool sweeps above did not.
    assert 0 < matched <= matches
