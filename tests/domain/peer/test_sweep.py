"""One topic's sweep against the real database: the same pairs as the rule, the cap
reserved before the claim, and no request in two matches when sweeps race."""

from __future__ import annotations

import threading

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.db import session_factory
from domain.peer.budget import count_open_matches
from domain.peer.pairing import pair_pool, user_pair
from domain.peer.shares import split_topics
from domain.peer.sweep import CLAIM_SLACK, SweepOutcome, sweep_topics, waiting_topics
from models.peer import MatchRequest, PeerDecline
from tests.factories import unique
from tests.factories_peer import make_pool, make_request, matches_of_topic

DIFFICULTIES = ("Easy", "Medium", "Hard")


RELAX_AFTER = 30


def sweep(
    topic: str | list[str], *, max_open_matches: int = 10**6, relax_after: int | None = None
) -> SweepOutcome:
    """One sweep of every pool of `topic` (or of several topics, as a share)."""
    return sweep_topics(
        session_factory(),
        topics=[topic] if isinstance(topic, str) else topic,
        difficulty=None,
        max_open_matches=max_open_matches,
        confirm_seconds=120,
        stale_after=150,
        relax_after=relax_after,
    )


def share_of(topic: str, relax_after: int | None) -> list[str] | None:
    """The share of a sweep of every pool that holds `topic`, or None when that sweep
    finds no work in it."""
    with session_factory().begin() as session:
        shares = split_topics(waiting_topics(session, None, relax_after))
    return next((share for share in shares if topic in share), None)


def counted(db: Session, rows: str, topic: str | list[str]) -> int:
    """`SELECT count(*) FROM <rows>`, with the topic (or topics) as `:t`."""
    return int(db.scalar(text(f"SELECT count(*) FROM {rows}"), {"t": topic}) or 0)


def expected_pairs(requests: list[MatchRequest], declined: set[tuple[int, int]]) -> set[frozenset]:
    """What the pairing rule gives for one pool's requests, given oldest first."""
    user_ids = [request.user_id for request in requests]
    return {
        frozenset((user_ids[older], user_ids[newer]))
        for older, newer in pair_pool(user_ids, declined)
    }


def test_a_topic_sweep_pairs_every_pool_of_it_by_the_rule(db):
    topic = unique("topic")
    pools = {level: make_pool(db, 9, topic=topic, difficulty=level) for level in DIFFICULTIES}
    # In each pool the oldest declined the second oldest: the rule steps around them.
    declined = set()
    for requests in pools.values():
        declines = user_pair(requests[0].user_id, requests[1].user_id)
        declined.add(declines)
        db.add(PeerDecline(user_low=declines[0], user_high=declines[1]))
    db.commit()

    done = sweep(topic)

    assert (done.matched, done.claimed, done.busy) == (3 * 4, 3 * 9, False)
    expected = set().union(*(expected_pairs(pool, declined) for pool in pools.values()))
    assert {frozenset((m.user_a, m.user_b)) for m in matches_of_topic(db, topic)} == expected
    assert counted(db, "outbox WHERE type = 'match.proposed' AND data->>'topic' = :t", topic) == 12
    assert db.scalar(text("SELECT count(*) FROM peer_match_reservations")) == 0


def test_the_cap_is_reserved_before_the_claim_and_keeps_the_oldest_pairs(db):
    topic = unique("topic")
    # Hard waited longest, then Medium, then Easy: forty requests each.
    for age, difficulty in ((300, "Hard"), (200, "Medium"), (100, "Easy")):
        for step in range(40):
            make_request(db, topic=topic, difficulty=difficulty, age_seconds=age - step)
    db.commit()
    cap = count_open_matches(db) + 3

    done = sweep(topic, max_open_matches=cap)

    assert done.matched == 3
    # Room for three pairs, shared by the three pools of forty: each claims its two
    # oldest requests (and a few spare), not all forty.
    assert done.claimed == 3 * (2 + CLAIM_SLACK)
    assert [m.difficulty for m in matches_of_topic(db, topic)] == ["Hard"] * 3
    assert counted(db, "match_requests WHERE topic = :t AND status = 'pending'", topic) == 114
    assert sweep(topic, max_open_matches=cap) == SweepOutcome(0, 0)


def test_sweeps_racing_under_a_tight_cap_never_exceed_it_or_pair_twice(db):
    topics = [unique("topic") for _ in range(4)]
    for topic in topics:
        for difficulty in DIFFICULTIES:
            make_pool(db, 20, topic=topic, difficulty=difficulty)
    db.commit()
    cap = count_open_matches(db) + 25

    results: list[SweepOutcome] = []
    racers = [
        threading.Thread(target=lambda t=topic: results.append(sweep(t, max_open_matches=cap)))
        for topic in topics * 2
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()

    assert sum(done.matched for done in results) == 25
    assert count_open_matches(db) == cap
    paired = db.execute(
        text(
            "SELECT r, count(*) FROM (SELECT request_a AS r FROM matches WHERE topic = ANY(:t) "
            "UNION ALL SELECT request_b FROM matches WHERE topic = ANY(:t)) AS s GROUP BY r"
        ),
        {"t": topics},
    ).all()
    assert len(paired) == 2 * 25
    assert {count for _, count in paired} == {1}
    assert counted(db, "matches WHERE topic = ANY(:t) AND user_a = user_b", topics) == 0


def test_a_sweep_of_every_pool_relaxes_a_quiet_topic(db):
    topic = unique("topic")
    easy = make_request(db, topic=topic, difficulty="Easy", age_seconds=RELAX_AFTER + 5)
    medium = make_request(db, topic=topic, difficulty="Medium", age_seconds=1)
    db.commit()

    # Without relaxation the topic holds no pair; with it, the overdue Easy request and
    # the Medium one next door are work for a sweep of every pool.
    assert share_of(topic, None) is None
    share = share_of(topic, RELAX_AFTER)
    assert share is not None
    with session_factory().begin() as session:
        assert waiting_topics(session, None, RELAX_AFTER)[topic] == 2

    assert sweep(share, relax_after=RELAX_AFTER).matched >= 1
    [match] = matches_of_topic(db, topic)
    assert (match.user_a, match.user_b, match.difficulty) == (easy.user_id, medium.user_id, "Easy")


def test_a_sweep_of_every_pool_leaves_a_quiet_topic_with_nobody_to_relax_with(db):
    early, apart, alone = unique("topic"), unique("topic"), unique("topic")
    # Adjacent but neither overdue yet; overdue but two steps apart; overdue and alone.
    make_request(db, topic=early, difficulty="Easy", age_seconds=RELAX_AFTER - 10)
    make_request(db, topic=early, difficulty="Medium", age_seconds=RELAX_AFTER - 10)
    make_request(db, topic=apart, difficulty="Easy", age_seconds=RELAX_AFTER + 5)
    make_request(db, topic=apart, difficulty="Hard", age_seconds=RELAX_AFTER + 5)
    make_request(db, topic=alone, difficulty="Medium", age_seconds=RELAX_AFTER + 5)
    db.commit()

    with session_factory().begin() as session:
        found = waiting_topics(session, None, RELAX_AFTER)
    assert not {early, apart, alone} & found.keys()
