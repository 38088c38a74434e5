"""`GET /metrics`: every series of contract section 7 that the database and broker hold,
scraped after a real peer workload, checked against the tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.series import MAX_POOL_SERIES, OTHER_TOPIC
from celeryconfig import QUEUE_NAMES
from core.settings import get_settings
from domain.peer.rules import DIFFICULTY_LADDER
from tests.api.support import client_for
from tests.factories import next_id, unique
from tests.factories_peer import backdate_request, make_pool, make_request, swept_match
from tests.support import (
    DOCUMENTED_QUEUES,
    WorkerProcess,
    queue_taken_from,
    run_task,
    send,
    task_finished,
    wait_for,
)


def _scrape(http: httpx.Client) -> dict[str, list[Sample]]:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    found = [s.value for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


MATCHED_SIDES_COUNT = (
    "SELECT count(*) FROM matches m JOIN match_requests r ON r.id IN (m.request_a, m.request_b)"
)


def _pool_series(db: Session) -> dict[tuple[str, str], float]:
    """What `matchops_peer_waiting_requests` must say, from the table by contract section
    7: every pool its own label set while they fit, else the biggest pools (ranked by size,
    then difficulty and topic, in the database's own order) keep theirs and the rest are
    summed per difficulty under topic="_other", one set each, within the limit."""
    db.rollback()  # a fresh snapshot
    pools = db.execute(
        text(
            "SELECT difficulty, topic, count(*) AS waiting FROM match_requests "
            "WHERE status = 'pending' GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
        )
    ).all()
    if len(pools) <= MAX_POOL_SERIES:
        return {(d, t): float(n) for d, t, n in pools}
    kept = MAX_POOL_SERIES - len(DIFFICULTY_LADDER)  # room for an "_other" set of each
    series = {(d, t): float(n) for d, t, n in pools[:kept]}
    for difficulty, _, waiting in pools[kept:]:
        key = (difficulty, OTHER_TOPIC)
        series[key] = series.get(key, 0.0) + waiting
    return series


def _scraped_pools(samples: dict[str, list[Sample]]) -> dict[tuple[str, str], float]:
    return {
        (s.labels["difficulty"], s.labels["topic"]): s.value
        for s in samples["matchops_peer_waiting_requests"]
    }


def _count(db: Session, sql: str) -> int:
    db.rollback()  # a fresh snapshot
    return int(db.scalar(text(sql)) or 0)


@pytest.fixture
def metrics_reader(api_url: str) -> Iterator[httpx.Client]:
    with client_for(api_url, ["metrics:read", "mentorship.rank"]) as http:
        yield http


@pytest.fixture
def own_topics(db: Session) -> Iterator[str]:
    """A topic prefix for the test; its requests are cancelled afterwards, so no other
    test's global sweep finds them."""
    prefix = unique("metrics")
    yield prefix
    db.rollback()
    db.execute(
        text(
            "UPDATE match_requests SET status = 'cancelled' "
            "WHERE topic LIKE :prefix AND status = 'pending'"
        ),
        {"prefix": f"{prefix}%"},
    )
    db.commit()


def test_metrics_need_the_metrics_read_scope(api_url: str, anonymous: httpx.Client):
    assert anonymous.get("/metrics").status_code == 401
    with client_for(api_url, ["peer.*"]) as http:
        refused = http.get("/metrics")
    assert refused.status_code == 403
    assert "metrics:read" in refused.json()["error"]["message"]
    with client_for(api_url, ["*"]) as http:
        assert http.get("/metrics").status_code == 200


def test_every_series_after_a_peer_workload(
    worker: WorkerProcess, db: Session, metrics_reader: httpx.Client, own_topics: str
):
    swept, waiting = f"{own_topics}-swept", f"{own_topics}-waiting"
    make_pool(db, 4, topic=swept, difficulty="Medium")
    oldest = make_request(db, topic=waiting, difficulty="Hard")
    make_request(db, topic=waiting, difficulty="Hard")
    db.commit()
    backdate_request(db, oldest.id, 90)
    # No relay runs meanwhile (a countdown another test left may come due): the outbox
    # lag is read with the sweep's events still waiting.
    with queue_taken_from(worker, "events"):
        assert run_task("peer.sweep", difficulty="Medium", topic=swept) == {"matched": 2}
        # A task through the API, for the accepted-tasks counter (it changes no pool).
        enqueued = metrics_reader.post(
            "/v1/tasks/mentorship.rank", json={"args": {"mentee_id": next_id()}}
        )
        assert enqueued.status_code == 202, enqueued.text

        # A message sits in a queue no worker reads for the moment.
        with queue_taken_from(worker, "maintenance"):
            send("mentorship.rebuild_stats")
            wait_for(
                lambda: (
                    _value(_scrape(metrics_reader), "matchops_queue_length", queue="maintenance")
                    >= 1
                ),
                what="the maintenance queue to hold the message",
            )
            samples = _scrape(metrics_reader)
        unpublished = _count(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL")

    # Pools: the metric equals the table, pool by pool (or summed under "_other" beyond
    # the limit, when other tests left that many pools pending).
    assert _scraped_pools(samples) == _pool_series(db)
    assert _value(samples, "matchops_peer_waiting_requests", difficulty="Hard", topic=waiting) == 2
    oldest_wait = _value(
        samples, "matchops_peer_oldest_wait_seconds", difficulty="Hard", topic=waiting
    )
    assert 90 <= oldest_wait < 150
    assert not [
        s
        for s in samples["matchops_peer_waiting_requests"]
        if s.labels["difficulty"] == "Medium" and s.labels["topic"] == swept
    ]

    # Time to match counts each side of every match a sweep proposed.
    matched = _count(db, MATCHED_SIDES_COUNT)
    assert matched >= 4
    assert _value(samples, "matchops_peer_time_to_match_seconds_count") == matched
    assert _value(samples, "matchops_peer_time_to_match_seconds_bucket", le="+Inf") == matched
    assert _value(samples, "matchops_peer_time_to_match_seconds_sum") >= 0

    open_matches = _count(db, "SELECT count(*) FROM matches WHERE status = 'pending_confirmation'")
    assert open_matches >= 2
    assert _value(samples, "matchops_peer_open_matches") == open_matches
    cap = get_settings().max_concurrent_matches
    assert _value(samples, "matchops_peer_open_matches_cap") == cap

    assert _value(samples, "matchops_outbox_unpublished") == unpublished
    assert unpublished >= 2  # match.proposed twice
    assert _value(samples, "matchops_outbox_lag_seconds") > 0

    accepted = _count(
        db, "SELECT count(*) FROM task_runs WHERE origin = 'api' AND name = 'mentorship.rank'"
    )
    assert accepted >= 1
    assert _value(samples, "matchops_tasks_accepted_total", task="mentorship.rank") == accepted
    started = _count(
        db,
        "SELECT count(*) FROM task_runs WHERE name = 'peer.sweep' AND started_at IS NOT NULL",
    )
    assert started >= 1
    wait_count = _value(samples, "matchops_task_queue_wait_seconds_count", task="peer.sweep")
    assert wait_count == started
    assert (
        _value(samples, "matchops_task_queue_wait_seconds_bucket", task="peer.sweep", le="+Inf")
        == started
    )

    queues = {s.labels["queue"]: s.value for s in samples["matchops_queue_length"]}
    assert set(queues) == DOCUMENTED_QUEUES
    assert queues["maintenance"] >= 1
    assert all(length >= 0 for length in queues.values())
    # Redis has no dead-letter queue (RabbitMQ's is checked in tests/workers).
    assert _value(samples, "matchops_dead_letters") == 0


def test_a_queue_nobody_consumes_shows_its_oldest_waiting_task(
    worker: WorkerProcess, metrics_reader: httpx.Client, api_url: str
):
    confirm = {"match_id": str(uuid.uuid4()), "user_id": next_id(), "confirmed": True}
    with (
        client_for(api_url, ["peer.confirm"]) as caller,
        queue_taken_from(worker, "answers"),
    ):
        accepted = caller.post("/v1/tasks/peer.confirm", json={"args": confirm})
        assert accepted.status_code == 202, accepted.text
        wait_for(
            lambda: (
                _value(
                    _scrape(metrics_reader), "matchops_queue_oldest_wait_seconds", queue="answers"
                )
                >= 1.5
            ),
            what="the answers queue's oldest task to have waited 1.5 s",
        )
        samples = _scrape(metrics_reader)
    assert {s.labels["queue"] for s in samples["matchops_queue_oldest_wait_seconds"]} == set(
        QUEUE_NAMES
    )
    wait_for(
        lambda: task_finished(accepted.json()["task_id"]),
        what="the held confirmation to run once its queue is consumed again",
    )


def test_time_to_match_counts_never_drop_when_a_match_is_declined(
    worker: WorkerProcess, db: Session, metrics_reader: httpx.Client, own_topics: str
):
    match = swept_match(db, f"{own_topics}-declined")
    before = _value(_scrape(metrics_reader), "matchops_peer_time_to_match_seconds_count")

    # The decline requeues the partner's request (its match_id cleared): the time it
    # waited for that match still happened.
    run_task("peer.confirm", match_id=str(match.id), user_id=match.user_a, confirmed=False)

    after = _value(_scrape(metrics_reader), "matchops_peer_time_to_match_seconds_count")
    assert after >= before == _count(db, MATCHED_SIDES_COUNT)


def test_pools_beyond_the_cap_are_summed_under_other(
    db: Session, metrics_reader: httpx.Client, own_topics: str
):
    # Pools of one request in two difficulties, and a few bigger ones, which keep their
    # own label sets however the one-request pools are ranked among themselves.
    for index in range(MAX_POOL_SERIES + 5):
        difficulty = ("Easy", "Medium")[index % 2]
        make_pool(
            db, 3 if index < 5 else 1, topic=f"{own_topics}-{index:03d}", difficulty=difficulty
        )
    db.commit()

    samples = _scrape(metrics_reader)

    waiting = samples["matchops_peer_waiting_requests"]
    assert len(waiting) <= MAX_POOL_SERIES
    assert len(samples["matchops_peer_oldest_wait_seconds"]) == len(waiting)
    scraped = _scraped_pools(samples)
    assert any(topic == OTHER_TOPIC for _, topic in scraped)
    assert scraped == _pool_series(db)
    for index in range(5):
        difficulty = ("Easy", "Medium")[index % 2]
        assert scraped[(difficulty, f"{own_topics}-{index:03d}")] == 3
    pending = _count(db, "SELECT count(*) FROM match_requests WHERE status = 'pending'")
    assert sum(s.value for s in waiting) == pending
