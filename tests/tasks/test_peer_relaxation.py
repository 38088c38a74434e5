"""Relaxation through a real worker: a request that waited past PEER_RELAX_AFTER_SECONDS
and has nobody in its pool is paired with the oldest request of an adjacent difficulty
of its topic, and only then."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.settings import get_settings
from domain.peer.pairing import user_pair
from models.peer import PeerDecline
from tests.factories import events_of, make_user, unique
from tests.factories_peer import (
    cap_with_room,
    make_pool,
    make_request,
    matches_of_topic,
    request_row,
)
from tests.support import WorkerProcess, run_task, running_beat, wait_for, worker_taking_over

RELAX_AFTER = 30


@pytest.fixture
def relaxing(worker: WorkerProcess) -> Iterator[WorkerProcess]:
    """A worker with relaxation after 30 s takes over the sweeps queue."""
    env = {"PEER_RELAX_AFTER_SECONDS": str(RELAX_AFTER)}
    with worker_taking_over(worker, "sweeps", "peer-relaxing", env) as sweeper:
        yield sweeper


def _sweep(topic: str) -> int:
    return int(run_task("peer.sweep", topic=topic)["matched"])


def test_a_request_overdue_and_alone_pairs_with_the_next_difficulty(relaxing, db):
    topic = unique("topic")
    waited = make_request(db, topic=topic, difficulty="Medium", age_seconds=RELAX_AFTER + 5)
    harder = make_request(db, topic=topic, difficulty="Hard", age_seconds=2)
    easier = make_request(db, topic=topic, difficulty="Easy", age_seconds=1)
    db.commit()

    assert _sweep(topic) == 1

    [match] = matches_of_topic(db, topic)
    # The oldest waiting request of an adjacent difficulty: Hard, older than Easy.
    assert {match.user_a, match.user_b} == {waited.user_id, harder.user_id}
    assert match.difficulty == "Medium"  # the easier of the two
    [event] = events_of(db, "match.proposed", match_id=match.id)
    assert event["relaxed"] is True
    assert event["difficulties"] == ["Medium", "Hard"]
    assert request_row(db, easier.id).status == "pending"


def test_no_relaxation_before_the_threshold(relaxing, db):
    topic = unique("topic")
    make_request(db, topic=topic, difficulty="Easy", age_seconds=RELAX_AFTER - 10)
    make_request(db, topic=topic, difficulty="Medium", age_seconds=1)
    db.commit()
    assert _sweep(topic) == 0


def test_the_exact_pool_comes_first(relaxing, db):
    topic = unique("topic")
    waited = make_request(db, topic=topic, difficulty="Easy", age_seconds=RELAX_AFTER + 5)
    same = make_request(db, topic=topic, difficulty="Easy", age_seconds=1)
    make_request(db, topic=topic, difficulty="Medium", age_seconds=RELAX_AFTER + 1)
    db.commit()

    assert _sweep(topic) == 1
    [match] = matches_of_topic(db, topic)
    assert {match.user_a, match.user_b} == {waited.user_id, same.user_id}
    [event] = events_of(db, "match.proposed", match_id=match.id)
    assert "relaxed" not in event


def test_never_across_topics_nor_two_steps_of_difficulty(relaxing, db):
    topic, other_topic = unique("topic"), unique("topic")
    make_request(db, topic=topic, difficulty="Easy", age_seconds=RELAX_AFTER + 5)
    make_request(db, topic=topic, difficulty="Hard", age_seconds=RELAX_AFTER + 5)
    make_request(db, topic=other_topic, difficulty="Medium", age_seconds=RELAX_AFTER + 5)
    db.commit()
    assert _sweep(topic) == 0
    assert _sweep(other_topic) == 0


def test_never_past_the_open_match_cap(worker, db):
    topic = unique("topic")
    # Two relaxed pairs wait: the two Medium requests declined each other, so their own
    # pool pairs nothing, and each overdue neighbour takes one of them.
    easy = make_request(db, topic=topic, difficulty="Easy", age_seconds=RELAX_AFTER + 9)
    hard = make_request(db, topic=topic, difficulty="Hard", age_seconds=RELAX_AFTER + 8)
    first, second = make_pool(db, 2, topic=topic, difficulty="Medium")
    low, high = user_pair(first.user_id, second.user_id)
    db.add(PeerDecline(user_low=low, user_high=high))
    db.commit()
    env = {
        "PEER_RELAX_AFTER_SECONDS": str(RELAX_AFTER),
        "MAX_CONCURRENT_MATCHES": str(cap_with_room(db, 1, get_settings().task_time_limit)),
    }
    with worker_taking_over(worker, "sweeps", "peer-relaxing-capped", env):
        # Room for one pair: the oldest overdue request's relaxed pair, and no more.
        assert _sweep(topic) == 1
        assert _sweep(topic) == 0
    [match] = matches_of_topic(db, topic)
    assert {match.user_a, match.user_b} == {easy.user_id, first.user_id}
    assert request_row(db, hard.id).status == "pending"


def test_a_quiet_topic_relaxes_with_beat_alone(worker, db, tmp_path):
    topic = unique("topic")
    relax_after = 3
    env = {"PEER_RELAX_AFTER_SECONDS": str(relax_after)}
    with (
        worker_taking_over(worker, "sweeps", "peer-relaxing-beat", env),
        running_beat(tmp_path / "beat.log"),
    ):
        easy, medium = make_user(db), make_user(db)
        db.commit()
        # Through the task, as a sibling asks: each commit triggers a sweep of the topic,
        # which finds nobody overdue yet. Nothing is sent after these two.
        asked = run_task("peer.request", user_id=easy.id, difficulty="Easy", topic=topic)
        run_task("peer.request", user_id=medium.id, difficulty="Medium", topic=topic)
        # Beat's safety tick (every 10 s) sweeps every pool once the Easy one is overdue.
        wait_for(lambda: matches_of_topic(db, topic), timeout=relax_after + 30, what="a match")
    [match] = matches_of_topic(db, topic)
    assert (match.user_a, match.user_b, match.difficulty) == (easy.id, medium.id, "Easy")
    waited = match.created_at - request_row(db, asked["request_id"]).created_at
    assert waited.total_seconds() >= relax_after
    [event] = events_of(db, "match.proposed", match_id=match.id)
    assert event["relaxed"] is True


def test_explain_agrees_with_the_sweep_on_a_relaxed_pairing(worker, db):
    topic = unique("topic")
    waited = make_request(db, topic=topic, difficulty="Easy", age_seconds=RELAX_AFTER + 5)
    fresh = make_request(db, topic=topic, difficulty="Easy", age_seconds=RELAX_AFTER - 10)
    make_request(db, topic=topic, difficulty="Medium", age_seconds=1)
    lonely = make_request(db, topic=unique("topic"), difficulty="Easy", age_seconds=60)
    db.commit()
    env = {"PEER_RELAX_AFTER_SECONDS": str(RELAX_AFTER)}
    with worker_taking_over(worker, "interactive", "peer-explaining-relaxed", env):
        # The two Easy requests pair in their own pool: nothing to relax.
        assert run_task("peer.explain", request_id=str(waited.id))["reasons"] == []
        run_task("peer.cancel", request_id=str(fresh.id), user_id=fresh.user_id)
        # Alone in its pool now, but overdue with a Medium request next door.
        assert run_task("peer.explain", request_id=str(waited.id))["reasons"] == []
        # Overdue with nobody next door either.
        lonely_reasons = run_task("peer.explain", request_id=str(lonely.id))["reasons"]
    assert lonely_reasons == ["no_partner_in_pool"]
