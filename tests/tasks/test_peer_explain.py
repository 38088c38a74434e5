"""`peer.explain` through the real worker: each reason in a situation built for it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, literal, select, text

from core.db import get_engine
from core.errors import NotFound
from core.settings import get_settings
from domain.peer.budget import count_open_matches
from domain.peer.pairing import user_pair
from domain.peer.pool_lock import pool_lock_keys
from tests.factories import unique
from tests.factories_peer import (
    cap_with_room,
    make_pool,
    make_request,
    matches_of_topic,
    request_row,
)
from tests.support import queue_taken_from, run_task, running_worker, wait_for, worker_taking_over


def explain(request_id: uuid.UUID) -> dict[str, Any]:
    answer: dict[str, Any] = run_task("peer.explain", request_id=str(request_id))
    return answer


def test_a_lonely_request_has_no_partner_in_its_pool(worker, db):
    topic = unique("topic")
    lonely = make_request(db, topic=topic, difficulty="Hard", age_seconds=30)
    db.commit()

    answer = explain(lonely.id)

    assert answer["request_id"] == str(lonely.id)
    assert answer["status"] == "pending"
    assert 29 < answer["waiting_seconds"] < 40
    assert answer["pool"]["difficulty"] == "Hard"
    assert answer["pool"]["topic"] == topic
    assert (answer["pool"]["waiting"], answer["pool"]["position"]) == (1, 1)
    assert 29 < answer["pool"]["oldest_waiting_seconds"] < 40
    assert answer["reasons"] == ["no_partner_in_pool"]
    # Nobody of this pool was ever matched: nothing to estimate from.
    assert answer["estimated_wait_seconds"] is None


def test_explain_pairs_the_pool_as_the_sweep_does(worker, db):
    topic = unique("topic")
    first, second, third = make_pool(db, 3, topic=topic)
    db.commit()

    answers = [explain(request.id) for request in (first, second, third)]

    assert [a["pool"]["position"] for a in answers] == [1, 2, 3]
    assert {a["pool"]["waiting"] for a in answers} == {3}
    # The two oldest pair up; the third's only partners are taken by older requests.
    assert [a["reasons"] for a in answers] == [[], [], ["no_partner_in_pool"]]
    assert answers[0]["estimated_wait_seconds"] == 0
    assert run_task("peer.sweep", difficulty="Easy", topic=topic) == {"matched": 1}
    after = explain(third.id)
    assert (after["pool"]["waiting"], after["pool"]["position"]) == (1, 1)
    assert after["reasons"] == ["no_partner_in_pool"]


def test_a_request_whose_only_partners_were_declined(worker, db):
    topic = unique("topic")
    first, second = make_pool(db, 2, topic=topic)
    low, high = user_pair(first.user_id, second.user_id)
    db.execute(
        text("INSERT INTO peer_declines (user_low, user_high) VALUES (:low, :high)"),
        {"low": low, "high": high},
    )
    db.commit()

    assert explain(first.id)["reasons"] == ["declined_partners_only"]
    assert explain(second.id)["reasons"] == ["declined_partners_only"]
    assert run_task("peer.sweep", difficulty="Easy", topic=topic) == {"matched": 0}

    newcomer = make_request(db, topic=topic)
    db.commit()
    # The newcomer goes to the oldest, which leaves nobody for the second.
    assert explain(first.id)["reasons"] == []
    assert explain(second.id)["reasons"] == ["no_partner_in_pool"]
    assert explain(newcomer.id)["reasons"] == []


def test_the_open_match_cap(worker, db):
    topic = unique("topic")
    first, _second = make_pool(db, 2, topic=topic)
    db.commit()
    cap = count_open_matches(db)

    # A worker whose cap is what is open now takes over the interactive queue.
    env = {"MAX_CONCURRENT_MATCHES": str(cap)}
    with worker_taking_over(worker, "interactive", "explain-cap", env):
        answer = explain(first.id)

    assert answer["reasons"] == ["open_match_cap_reached"]
    assert explain(first.id)["reasons"] == []


def test_room_for_one_pair_goes_to_the_pool_s_oldest_pair(worker, db):
    topic = unique("topic")
    requests = make_pool(db, 4, topic=topic)
    db.commit()
    cap = cap_with_room(db, 1, get_settings().task_time_limit)

    # A worker whose cap has room for one more pair answers explains and runs sweeps.
    env = {"MAX_CONCURRENT_MATCHES": str(cap)}
    with (
        queue_taken_from(worker, "interactive"),
        queue_taken_from(worker, "sweeps"),
        running_worker("explain-one-pair", queues="interactive,sweeps", extra_env=env),
    ):
        before = [explain(request.id)["reasons"] for request in requests]
        # The sweep a commit into the topic triggers.
        swept = run_task("peer.sweep", topic=topic)
        after = [explain(request.id)["reasons"] for request in requests]

    # Both pairs have a partner; the cap keeps the one whose older request waited longest.
    capped = ["open_match_cap_reached"]
    assert before == [[], [], capped, capped]
    assert swept == {"matched": 1}
    assert [request_row(db, r.id).status for r in requests] == [
        "matched",
        "matched",
        "pending",
        "pending",
    ]
    assert after == [["not_pending"], ["not_pending"], capped, capped]


def test_a_pool_a_running_sweep_holds_is_busy(worker, db):
    topic = unique("topic")
    first, _second = make_pool(db, 2, topic=topic, difficulty="Medium")
    db.commit()

    # Another connection holds the pool's lock, as a sweep does while it pairs the pool.
    with get_engine().connect() as holder:
        holder.execute(
            select(func.pg_advisory_xact_lock(*pool_lock_keys(literal("Medium"), literal(topic))))
        )
        answer = explain(first.id)
        # The sweep skips the pool it cannot lock.
        skipped = run_task("peer.sweep", difficulty="Medium", topic=topic)
        holder.rollback()

    assert answer["reasons"] == ["pool_busy"]
    assert answer["estimated_wait_seconds"] == 0
    assert skipped == {"matched": 0}
    # The skipping sweep queued a follow-up of the pool, which pairs it once it is free.
    wait_for(lambda: explain(first.id)["status"] == "matched", what="the follow-up sweep")


def test_a_request_no_longer_pending(worker, db):
    topic = unique("topic")
    first, _second = make_pool(db, 2, topic=topic)
    db.commit()
    run_task("peer.sweep", difficulty="Easy", topic=topic)

    answer = explain(first.id)

    assert answer["status"] == "matched"
    assert answer["reasons"] == ["not_pending"]
    # It waited until its match was proposed.
    (match,) = matches_of_topic(db, topic)
    assert answer["waiting_seconds"] == pytest.approx(
        (match.created_at - first.created_at).total_seconds(), abs=0.01
    )
    assert answer["pool"]["position"] is None
    assert answer["estimated_wait_seconds"] is None


def test_the_estimate_comes_from_the_pool_s_recent_time_to_match(worker, db):
    topic = unique("topic")
    # Two earlier pairs of the pool waited about 30 and 50 seconds for their match.
    for age in (30, 50):
        make_request(db, topic=topic, age_seconds=age)
        make_request(db, topic=topic, age_seconds=age)
        db.commit()
        run_task("peer.sweep", difficulty="Easy", topic=topic)
    lonely = make_request(db, topic=topic, age_seconds=10)
    db.commit()

    answer = explain(lonely.id)

    assert answer["reasons"] == ["no_partner_in_pool"]
    # Those who waited longer than its 10 s still had about 20 or 40 s to go: median 30.
    assert answer["estimated_wait_seconds"] == pytest.approx(30, abs=2)


def test_an_unknown_request_is_not_found(worker):
    with pytest.raises(NotFound):
        explain(uuid.uuid4())
