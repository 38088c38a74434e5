"""Relaxation through a real worker: a request that waited past PEER_RELAX_AFTER_SECONDS
and has nobody in its pool is paired with the oldest request of an adjacent difficulty
of its topic, and only then."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from domain.peer.budget import count_open_matches
from tests.factories import events_of, unique
from tests.factories_peer import make_request, matches_of_topic, request_row
from tests.support import WorkerProcess, run_task, worker_taking_over

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
    make_request(db, topic=topic, difficulty="Easy", age_seconds=RELAX_AFTER + 5)
    make_request(db, topic=topic, difficulty="Medium", age_seconds=RELAX_AFTER + 5)
    db.commit()
    env = {
        "PEER_RELAX_AFTER_SECONDS": str(RELAX_AFTER),
        "MAX_CONCURRENT_MATCHES": str(count_open_matches(db)),
    }
    with worker_taking_over(worker, "sweeps", "peer-relaxing-capped", env):
        assert _sweep(topic) == 0


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
