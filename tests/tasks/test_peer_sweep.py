"""`peer.sweep` through the real worker: the pairing rules, the cap, events, idempotency."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from domain.peer.budget import count_open_matches
from tests.factories import events_of, unique
from tests.factories_peer import (
    make_pool,
    make_request,
    matches_of_topic,
    pairs_of_topic,
    request_row,
)
from tests.support import capped_sweeper, run_task, send, wait_for


def test_sweep_pairs_a_pool_oldest_first_and_the_odd_one_waits(worker, db):
    topic = unique("topic")
    pool = make_pool(db, 5, topic=topic, difficulty="Medium")
    db.commit()

    result = run_task("peer.sweep", difficulty="Medium", topic=topic)

    assert result == {"matched": 2}
    matches = matches_of_topic(db, topic)
    # user_a is the side that waited longer.
    assert {(m.user_a, m.user_b) for m in matches} == {
        (pool[0].user_id, pool[1].user_id),
        (pool[2].user_id, pool[3].user_id),
    }
    for match in matches:
        assert (match.status, match.difficulty, match.topic) == (
            "pending_confirmation",
            "Medium",
            topic,
        )
        assert (match.confirm_deadline - match.created_at).total_seconds() == 120
        for request_id in (match.request_a, match.request_b):
            stored = request_row(db, request_id)
            assert (stored.status, stored.match_id) == ("matched", match.id)
    assert request_row(db, pool[4].id).status == "pending"
    proposed = events_of(db, "match.proposed", topic=topic)
    assert len(proposed) == 2
    assert {p["match_id"] for p in proposed} == {str(m.id) for m in matches}
    assert set(proposed[0]) == {"match_id", "users", "difficulty", "topic", "confirm_deadline"}


def test_sweeping_again_changes_nothing(worker, db):
    topic = unique("topic")
    make_pool(db, 4, topic=topic)
    db.commit()

    first = run_task("peer.sweep", difficulty="Easy", topic=topic)
    second = run_task("peer.sweep", difficulty="Easy", topic=topic)

    assert (first, second) == ({"matched": 2}, {"matched": 0})
    assert len(matches_of_topic(db, topic)) == 2
    assert len(events_of(db, "match.proposed", topic=topic)) == 2


def test_pools_never_mix_and_a_global_sweep_covers_every_pool(worker, db):
    topic, other_topic = unique("topic"), unique("topic")
    easy = make_request(db, topic=topic, difficulty="Easy", age_seconds=3)
    hard = make_request(db, topic=topic, difficulty="Hard", age_seconds=2)
    other = make_request(db, topic=other_topic, difficulty="Easy", age_seconds=1)
    easy_partner = make_request(db, topic=topic, difficulty="Easy")
    db.commit()

    fanned_out = run_task("peer.sweep")

    # A handful of requests makes one share of every topic.
    assert fanned_out == {"matched": 0, "shares": 1}
    wait_for(lambda: pairs_of_topic(db, topic), what="the fanned-out sweep of the topic")
    assert pairs_of_topic(db, topic) == {frozenset((easy.user_id, easy_partner.user_id))}
    assert pairs_of_topic(db, other_topic) == set()
    assert request_row(db, hard.id).status == "pending"
    assert request_row(db, other.id).status == "pending"


def test_a_sweep_of_one_pool_leaves_the_others_alone(worker, db):
    topic, other_topic = unique("topic"), unique("topic")
    make_pool(db, 2, topic=topic)
    make_pool(db, 2, topic=other_topic)
    db.commit()

    assert run_task("peer.sweep", difficulty="Easy", topic=topic) == {"matched": 1}
    assert len(matches_of_topic(db, topic)) == 1
    assert matches_of_topic(db, other_topic) == []


def test_users_who_declined_each_other_are_not_paired_within_the_hour(worker, db):
    topic = unique("topic")
    first, second = make_pool(db, 2, topic=topic)
    db.commit()
    run_task("peer.sweep", difficulty="Easy", topic=topic)
    (match,) = matches_of_topic(db, topic)
    # The newer side says no: the older one is requeued, the decliner queues again.
    run_task("peer.confirm", match_id=str(match.id), user_id=second.user_id, confirmed=False)
    again = run_task("peer.request", user_id=second.user_id, difficulty="Easy", topic=topic)

    assert run_task("peer.sweep", difficulty="Easy", topic=topic) == {"matched": 0}

    newcomer = make_request(db, topic=topic)
    db.commit()
    assert run_task("peer.sweep", difficulty="Easy", topic=topic) == {"matched": 1}
    assert frozenset((first.user_id, newcomer.user_id)) in pairs_of_topic(db, topic)
    assert request_row(db, uuid.UUID(again["request_id"])).status == "pending"

    # An hour later they may meet again.
    db.execute(
        text(
            "UPDATE peer_declines SET declined_at = now() - interval '61 minutes' "
            "WHERE :u IN (user_low, user_high)"
        ),
        {"u": second.user_id},
    )
    late = make_request(db, topic=topic)
    db.commit()
    assert run_task("peer.sweep", difficulty="Easy", topic=topic) == {"matched": 1}
    assert frozenset((second.user_id, late.user_id)) in pairs_of_topic(db, topic)


def test_a_requeued_request_keeps_its_original_place(worker, db):
    topic = unique("topic")
    older, decliner = make_pool(db, 2, topic=topic)
    db.commit()
    run_task("peer.sweep", difficulty="Easy", topic=topic)
    (match,) = matches_of_topic(db, topic)
    # Two more arrive while the match waits for answers.
    third = make_request(db, topic=topic)
    fourth = make_request(db, topic=topic)
    db.commit()

    run_task("peer.confirm", match_id=str(match.id), user_id=decliner.user_id, confirmed=False)
    run_task("peer.sweep", difficulty="Easy", topic=topic)

    # The requeued request is older than both newcomers, so it takes the first of them.
    assert frozenset((older.user_id, third.user_id)) in pairs_of_topic(db, topic)
    assert request_row(db, fourth.id).status == "pending"
    assert request_row(db, older.id).created_at == older.created_at


def test_never_more_open_matches_than_the_cap(worker, db):
    topics = [unique("topic"), unique("topic")]
    for topic in topics:
        make_pool(db, 4, topic=topic)
    db.commit()
    cap = count_open_matches(db) + 3

    # A worker with a small cap takes over the sweeps queue for this test.
    with capped_sweeper(worker, "peer-cap", cap):
        # Two pools swept at once compete for the last three places.
        racing = [send("peer.sweep", difficulty="Easy", topic=topic) for topic in topics]
        created = sum(result.get(timeout=60)["matched"] for result in racing)
        after_cap = run_task("peer.sweep", difficulty="Easy", topic=topics[0])

    assert created == 3
    assert after_cap == {"matched": 0}
    assert count_open_matches(db) == cap
    assert sum(len(matches_of_topic(db, topic)) for topic in topics) == 3
