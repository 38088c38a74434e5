"""`GET /metrics`: every series of contract section 7 that the database and broker hold,
scraped after a real peer workload, checked against the tables."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.metrics import MAX_POOL_SERIES, OTHER_TOPIC
from core.settings import get_settings
from tests.api.support import client_for
from tests.factories import next_id, unique
from tests.factories_peer import backdate_request, make_pool, make_request, swept_match
from tests.support import WorkerProcess, queue_taken_from, run_task, send, wait_for


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

    # Pools: the metric equals the table, pool by pool, while there are fewer than the cap.
    pools = db.execute(
        text(
            "SELECT difficulty, topic, count(*) FROM match_requests "
            "WHERE status = 'pending' GROUP BY 1, 2"
        )
    ).all()
    if len(pools) <= MAX_POOL_SERIES:
        scraped = {
            (s.labels["difficulty"], s.labels["topic"]): s.value
            for s in samples["matchops_peer_waiting_requests"]
        }
        assert scraped == {(d, t): float(n) for d, t, n in pools}
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
    assert set(queues) == {"interactive", "sweeps", "cascades", "maintenance", "events", "celery"}
    assert queues["maintenance"] >= 1
    assert all(length >= 0 for length in queues.values())
    # Redis has no dead-letter queue (RabbitMQ's is checked in tests/workers).
    assert _value(samples, "matchops_dead_letters") == 0


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
    for index in range(MAX_POOL_SERIES + 5):
        make_request(db, topic=f"{own_topics}-{index:03d}", difficulty="Easy")
    db.commit()

    samples = _scrape(metrics_reader)

    waiting = samples["matchops_peer_waiting_requests"]
    assert len(waiting) <= MAX_POOL_SERIES
    assert len(samples["matchops_peer_oldest_wait_seconds"]) == len(waiting)
    assert any(s.labels["topic"] == OTHER_TOPIC for s in waiting)
    pending = _count(db, "SELECT count(*) FROM match_requests WHERE status = 'pending'")
    assert sum(s.value for s in waiting) == pending
