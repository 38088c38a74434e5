"""The failure series of `GET /metrics` move when a task fails, gives up, is published
again, or an enqueue is refused; the ledger's counters survive the pruning of rows; and
a due task that no dispatcher hands over shows as dispatch lag."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.db import get_engine, session_factory
from core.settings import get_settings
from core.task_store import TASK_RUN_RETENTION_DAYS, prune_task_runs
from tests.api.support import client_for
from tests.factories import make_user, next_id, unique
from tests.support import (
    KILLING_WORKER,
    WorkerProcess,
    queue_taken_from,
    redispatching,
    running_worker,
    task_finished,
    task_run,
    wait_for,
)
from workers.app import app

Labels = frozenset[tuple[str, str]]


def _scrape(http: httpx.Client) -> dict[tuple[str, Labels], float]:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def metrics_reader(api_url: str) -> Iterator[httpx.Client]:
    with client_for(api_url, ["metrics:read"]) as http:
        yield http


def test_a_domain_error_counts_one_failure_of_its_task_and_type(
    worker: WorkerProcess, metrics_reader: httpx.Client, client: httpx.Client
):
    failed = {"task": "peer.cancel", "error": "NotFound"}
    before = _value(_scrape(metrics_reader), "matchops_tasks_failed_total", **failed) or 0

    answer = client.post(
        "/v1/tasks/peer.cancel",
        json={"args": {"request_id": str(uuid.uuid4()), "user_id": next_id()}, "wait": 20},
    )
    assert answer.json()["error"]["type"] == "NotFound", answer.text

    samples = _scrape(metrics_reader)
    assert _value(samples, "matchops_tasks_failed_total", **failed) == before + 1
    # A refusal is an answer, not a task that gave up.
    assert _value(samples, "matchops_tasks_gave_up_total", task="peer.cancel") == 0


def test_a_task_that_gives_up_counts_in_both_series(
    worker: WorkerProcess, metrics_reader: httpx.Client
):
    samples = _scrape(metrics_reader)
    gave_up_before = _value(samples, "matchops_tasks_gave_up_total", task="events.publish") or 0
    failed = {"task": "events.publish", "error": "GaveUp"}
    failed_before = _value(samples, "matchops_tasks_failed_total", **failed) or 0

    task_id = str(uuid.uuid4())
    env = {"MATCHOPS_TEST_KILL": f"claimed:{task_id}", "TASK_MAX_DELIVERIES": "2"}
    with (
        queue_taken_from(worker, "events"),
        running_worker("gives-up", queues="events", extra_env=env, entry=KILLING_WORKER),
    ):
        app.send_task("events.publish", task_id=task_id)
        wait_for(lambda: task_finished(task_id), timeout=60, what="the task to be given up")
    assert task_run(task_id).error["type"] == "GaveUp"

    samples = _scrape(metrics_reader)
    assert _value(samples, "matchops_tasks_gave_up_total", task="events.publish") == (
        gave_up_before + 1
    )
    assert _value(samples, "matchops_tasks_failed_total", **failed) == failed_before + 1


def test_a_task_published_again_counts_a_redispatch(
    worker: WorkerProcess, db: Session, metrics_reader: httpx.Client, client: httpx.Client
):
    user, other = make_user(db), make_user(db)
    db.commit()
    redispatched = {"task": "peer.request"}
    before = _value(_scrape(metrics_reader), "matchops_task_redispatches_total", **redispatched)
    # A task published once counts no redispatch.
    once = client.post(
        "/v1/tasks/peer.request",
        json={
            "args": {"user_id": other.id, "difficulty": "Easy", "topic": unique("kept")},
            "wait": 20,
        },
    )
    assert once.json()["state"] == "SUCCESS", once.text
    broker = redis.Redis.from_url(get_settings().broker)
    with queue_taken_from(worker, "interactive"):
        task_id = client.post(
            "/v1/tasks/peer.request",
            json={"args": {"user_id": user.id, "difficulty": "Easy", "topic": unique("lost")}},
        ).json()["task_id"]
        wait_for(lambda: broker.llen("interactive") >= 1, what="the message in the broker")
        # The broker loses the message; only a dispatcher's scan can publish it again.
        broker.delete("interactive")
    with redispatching(1):
        wait_for(lambda: task_finished(task_id), timeout=60, what="the redispatch")

    redispatches = task_run(task_id).redispatches
    assert redispatches >= 1
    after = _value(_scrape(metrics_reader), "matchops_task_redispatches_total", **redispatched)
    assert after == (before or 0) + redispatches


def test_each_refused_enqueue_counts_under_its_status(
    api_url: str, anonymous: httpx.Client, client: httpx.Client, metrics_reader: httpx.Client
):
    def refusals() -> dict[str, float]:
        samples = _scrape(metrics_reader)
        return {
            dict(labels)["status"]: value
            for (name, labels), value in samples.items()
            if name == "matchops_enqueue_refusals_total"
        }

    before = refusals()
    assert {"401", "403", "404", "409", "413", "422", "429", "503", "other"} <= set(before)

    args = {"mentee_id": next_id()}
    assert anonymous.post("/v1/tasks/mentorship.rank", json={"args": args}).status_code == 401
    with client_for(api_url, ["peer.*"]) as peer_only:
        assert peer_only.post("/v1/tasks/mentorship.rank", json={"args": args}).status_code == 403
    assert client.post("/v1/tasks/no.such.task", json={"args": {}}).status_code == 404
    key = unique("key")
    first = client.post("/v1/tasks/mentorship.rank", json={"args": args, "idempotency_key": key})
    assert first.status_code == 202
    reused = {"args": {"mentee_id": next_id()}, "idempotency_key": key}
    assert client.post("/v1/tasks/mentorship.rank", json=reused).status_code == 409
    too_big = {"args": {"mentee_id": 1}, "padding": "x" * 70_000}
    assert client.post("/v1/tasks/mentorship.rank", json=too_big).status_code == 413
    for _ in range(2):
        bad = client.post("/v1/tasks/mentorship.rank", json={"args": {"mentee_id": "x"}})
        assert bad.status_code == 422
    # Reads are not enqueues: an unknown task id is not a refusal.
    assert client.get(f"/v1/tasks/{uuid.uuid4()}").status_code == 404

    after = refusals()
    moved = {status: after[status] - before[status] for status in after}
    assert moved == {
        **dict.fromkeys(before, 0.0),
        "401": 1.0,
        "403": 1.0,
        "404": 1.0,
        "409": 1.0,
        "413": 1.0,
        "422": 2.0,
    }


def test_pruned_rows_stay_counted(db: Session, metrics_reader: httpx.Client):
    name = unique("pruned.task")
    # Finished past retention: an unexpected error, a refusal, a task that gave up, and a
    # success that was published three times.
    db.execute(
        text(
            "INSERT INTO task_runs (task_id, name, args, caller, origin, state, error, "
            "redispatches, finished_at) "
            "SELECT gen_random_uuid(), :name, '{}', 'tests', 'api', state, "
            "CAST(error AS jsonb), redispatches, "
            "now() - make_interval(days => :days + 1) "
            "FROM (VALUES ('FAILURE', '{\"type\": \"KeyError\"}', 0), "
            "('FAILURE', '{\"type\": \"NotFound\"}', 1), "
            "('FAILURE', '{\"type\": \"GaveUp\"}', 0), "
            "('SUCCESS', NULL, 3)) AS v (state, error, redispatches)"
        ),
        {"name": name, "days": TASK_RUN_RETENTION_DAYS},
    )
    db.commit()
    expected = {
        ("matchops_tasks_failed_total", frozenset({("task", name), ("error", "_other")})): 1.0,
        ("matchops_tasks_failed_total", frozenset({("task", name), ("error", "NotFound")})): 1.0,
        ("matchops_tasks_failed_total", frozenset({("task", name), ("error", "GaveUp")})): 1.0,
        ("matchops_tasks_gave_up_total", frozenset({("task", name)})): 1.0,
        ("matchops_task_redispatches_total", frozenset({("task", name)})): 4.0,
    }

    def own_series() -> dict[tuple[str, Labels], float]:
        return {
            key: value
            for key, value in _scrape(metrics_reader).items()
            if ("task", name) in key[1] and key[0] != "matchops_tasks_accepted_total"
        }

    assert own_series() == expected

    with session_factory().begin() as session:
        assert prune_task_runs(session) >= 4
    remaining = db.scalar(text("SELECT count(*) FROM task_runs WHERE name = :name"), {"name": name})
    assert remaining == 0
    assert own_series() == expected


def test_a_due_task_no_dispatcher_hands_over_shows_as_dispatch_lag(
    worker: WorkerProcess, db: Session, metrics_reader: httpx.Client
):
    task_id = str(uuid.uuid4())
    db.execute(
        text(
            "INSERT INTO task_runs (task_id, name, args, caller, origin, due_at) "
            "VALUES (:id, 'mentorship.rank', CAST(:args AS jsonb), 'tests', 'api', "
            "now() + interval '1 second')"
        ),
        {"id": task_id, "args": f'{{"mentee_id": {next_id()}}}'},
    )
    db.commit()
    # Locked, the row is skipped by every dispatcher's scan, as if none ran.
    holder = get_engine().connect()
    try:
        holder.execute(
            text("SELECT 1 FROM task_runs WHERE task_id = :id FOR UPDATE"), {"id": task_id}
        )
        wait_for(
            lambda: (
                (_value(_scrape(metrics_reader), "matchops_task_dispatch_lag_seconds") or 0) >= 2
            ),
            what="the due task to show as dispatch lag",
        )
        assert (_value(_scrape(metrics_reader), "matchops_tasks_undispatched") or 0) >= 1
    finally:
        holder.rollback()
        holder.close()
    wait_for(lambda: task_finished(str(task_id)), what="a dispatcher to hand the task over")
    assert _value(_scrape(metrics_reader), "matchops_task_dispatch_lag_seconds") == 0
