"""The sweep spread over lanes, against the real database: the same pairs as the rule,
one budget for all lanes, and no request in two matches when lanes of two sweeps race."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session

from core.db import get_engine, session_factory
from domain.peer.pairing import pair_pool, user_pair
from domain.peer.sweep import count_open_matches, sweep
from models.peer import MatchRequest, PeerDecline
from tests.factories import unique
from tests.factories_peer import make_pool, make_request, matches_of_topic

DIFFICULTIES = ("Easy", "Medium", "Hard")


@contextmanager
def claims_counted() -> Iterator[list[int]]:
    """Backend pids of every claim statement sent while the block runs."""
    pids: list[int] = []
    lock = threading.Lock()

    def _seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "string_agg(id::text" in statement:
            with lock:
                pids.append(conn.connection.driver_connection.info.backend_pid)

    event.listen(get_engine(), "before_cursor_execute", _seen)
    try:
        yield pids
    finally:
        event.remove(get_engine(), "before_cursor_execute", _seen)


def sweep_topic(topic: str, *, lanes: int, max_open_matches: int = 10**6) -> int:
    """One sweep of the three pools of `topic`, spread over up to `lanes` lanes."""
    result = sweep(
        session_factory(),
        difficulty=None,
        topic=topic,
        max_open_matches=max_open_matches,
        confirm_seconds=120,
        lanes=lanes,
        min_per_lane=1,
    )
    return result["matched"]


def counted(db: Session, rows: str, topic: str) -> int:
    """`SELECT count(*) FROM <rows>`, with the topic as `:t`."""
    return int(db.scalar(text(f"SELECT count(*) FROM {rows}"), {"t": topic}) or 0)


def expected_pairs(requests: list[MatchRequest], declined: set[tuple[int, int]]) -> set[frozenset]:
    """What the pairing rule gives for one pool's requests, given oldest first."""
    user_ids = [request.user_id for request in requests]
    return {
        frozenset((user_ids[older], user_ids[newer]))
        for older, newer in pair_pool(user_ids, declined)
    }


def test_lanes_pair_every_pool_by_the_rule_each_pool_in_one_lane(db):
    topic = unique("topic")
    pools = {level: make_pool(db, 9, topic=topic, difficulty=level) for level in DIFFICULTIES}
    # In each pool the oldest declined the second oldest: the rule steps around them.
    declined = set()
    for requests in pools.values():
        declines = user_pair(requests[0].user_id, requests[1].user_id)
        declined.add(declines)
        db.add(PeerDecline(user_low=declines[0], user_high=declines[1]))
    db.commit()

    with claims_counted() as claims:
        matched = sweep_topic(topic, lanes=3)

    assert len(set(claims)) == 3  # three lanes, three connections
    assert matched == 3 * 4
    expected = set().union(*(expected_pairs(pool, declined) for pool in pools.values()))
    assert {frozenset((m.user_a, m.user_b)) for m in matches_of_topic(db, topic)} == expected
    assert counted(db, "outbox WHERE type = 'match.proposed' AND data->>'topic' = :t", topic) == 12


def test_the_budget_is_shared_by_all_lanes_oldest_pairs_first(db):
    topic = unique("topic")
    # Hard waited longest, then Medium, then Easy: two pairs each.
    for age, difficulty in ((300, "Hard"), (200, "Medium"), (100, "Easy")):
        for step in range(4):
            make_request(db, topic=topic, difficulty=difficulty, age_seconds=age - step)
    db.commit()
    cap = count_open_matches(db) + 3

    with claims_counted() as claims:
        assert sweep_topic(topic, lanes=3, max_open_matches=cap) == 3

    assert len(set(claims)) == 3
    assert sorted(m.difficulty for m in matches_of_topic(db, topic)) == ["Hard", "Hard", "Medium"]
    assert counted(db, "match_requests WHERE topic = :t AND status = 'pending'", topic) == 6


def test_multi_lane_sweeps_racing_never_put_a_request_in_two_matches(db):
    topic = unique("topic")
    for difficulty in DIFFICULTIES:
        make_pool(db, 40, topic=topic, difficulty=difficulty)
    db.commit()

    results: list[int] = []
    racers = [
        threading.Thread(target=lambda: results.append(sweep_topic(topic, lanes=3)))
        for _ in range(4)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()

    assert sum(results) == 3 * 20
    paired = db.execute(
        text(
            "SELECT r, count(*) FROM (SELECT request_a AS r FROM matches WHERE topic = :t "
            "UNION ALL SELECT request_b FROM matches WHERE topic = :t) AS s GROUP BY r"
        ),
        {"t": topic},
    ).all()
    assert len(paired) == 3 * 40
    assert {count for _, count in paired} == {1}
    assert counted(db, "matches WHERE topic = :t AND user_a = user_b", topic) == 0
