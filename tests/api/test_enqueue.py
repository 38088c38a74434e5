"""`POST /v1/tasks/{name}`: validation, idempotency keys, countdown and wait."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import select

from api.errors import api_error
from core.errors import DomainError
from core.settings import get_settings
from models.platform import TaskRun
from submission.service import accepting_connection, prepare_task, record_tasks
from tests.api.support import client_for, task_events, token, wait_until_final
from tests.factories import unique


def _rows(db, caller: str) -> list[TaskRun]:
    db.expire_all()
    return list(db.scalars(select(TaskRun).where(TaskRun.caller == caller)))


def test_unknown_task_name_is_404(client: httpx.Client):
    response = client.post("/v1/tasks/peer.nonexistent", json={"args": {}})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "type": "not_found",
            "message": "unknown task 'peer.nonexistent'; GET /v1/tasks lists the tasks",
        }
    }


def test_args_outside_the_task_schema_are_422_naming_the_field(client: httpx.Client):
    response = client.post("/v1/tasks/events.publish", json={"args": {"bogus": 1}})
    assert response.status_code == 422
    assert response.json() == {
        "error": {
            "type": "validation_error",
            "message": "args.bogus: Extra inputs are not permitted",
        }
    }


def test_countdown_beyond_the_limit_is_422(client: httpx.Client):
    too_long = get_settings().max_countdown_seconds + 1
    response = client.post("/v1/tasks/events.publish", json={"args": {}, "countdown": too_long})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert message.startswith("countdown: must be between 0 and")
    assert (
        client.post("/v1/tasks/events.publish", json={"args": {}, "countdown": -1})
        .json()["error"]["message"]
        .startswith("countdown:")
    )


def test_wait_over_thirty_seconds_is_422(client: httpx.Client):
    response = client.post("/v1/tasks/events.publish", json={"args": {}, "wait": 31})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "wait: must be above 0 and at most 30 seconds, got 31"
    )


def test_booleans_are_not_seconds(client: httpx.Client):
    for body in ({"countdown": False}, {"wait": True}):
        response = client.post("/v1/tasks/events.publish", json={"args": {}, **body})
        assert response.status_code == 422
        field = next(iter(body))
        assert response.json()["error"]["message"] == f"{field}: Input should be a valid number"


def test_malformed_json_is_422(client: httpx.Client):
    response = client.post(
        "/v1/tasks/events.publish",
        content=b'{"args": {',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("body: invalid JSON")


def test_unknown_body_field_and_non_object_args_are_422(client: httpx.Client):
    response = client.post("/v1/tasks/events.publish", json={"args": [], "idempotency": "k"})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "args: Input should be a valid dictionary" in message
    assert "idempotency: Extra inputs are not permitted" in message


def test_every_enqueue_is_recorded_with_its_caller(api_url: str, db):
    caller = unique("recorded")
    with client_for(api_url, ["events.*"], sub=caller) as http:
        response = http.post("/v1/tasks/events.publish", json={"args": {}})
    assert response.status_code == 202
    body = response.json()
    assert body == {
        "task_id": body["task_id"],
        "name": "events.publish",
        "state": "PENDING",
        "status_url": f"/v1/tasks/{body['task_id']}",
    }
    [row] = _rows(db, caller)
    assert (str(row.task_id), row.name, row.args, row.idempotency_key) == (
        body["task_id"],
        "events.publish",
        {},
        None,
    )


def test_same_key_twice_runs_the_task_once(worker, api_url: str, db):
    caller, key = unique("idem"), unique("key")
    payload = {"args": {}, "idempotency_key": key}
    with task_events() as events, client_for(api_url, ["*"], sub=caller) as http:
        first = http.post("/v1/tasks/events.publish", json=payload)
        second = http.post("/v1/tasks/events.publish", json=payload)
        task_id = first.json()["task_id"]
        assert wait_until_final(http, task_id)["state"] == "SUCCESS"
        # Again once the task has finished: still the same task, still not re-run.
        third = http.post("/v1/tasks/events.publish", json=payload)
        time.sleep(1)  # room for a duplicate message to arrive, had one been sent
    assert first.status_code == second.status_code == third.status_code == 202
    assert second.json()["task_id"] == third.json()["task_id"] == task_id
    assert len(_rows(db, caller)) == 1
    assert events.count("task-received", task_id) == 1
    assert events.count("task-succeeded", task_id) == 1


def test_concurrent_duplicate_posts_enqueue_one_task(worker, api_url: str, db):
    caller, key = unique("race"), unique("key")
    payload = {"args": {}, "idempotency_key": key}
    start = threading.Barrier(8)
    answers: list[httpx.Response] = []

    def post() -> None:
        with client_for(api_url, ["*"], sub=caller) as http:
            start.wait()
            answers.append(http.post("/v1/tasks/events.publish", json=payload))

    with task_events() as events:
        threads = [threading.Thread(target=post) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        task_ids = {a.json()["task_id"] for a in answers}
        assert len(task_ids) == 1
        [task_id] = task_ids
        with client_for(api_url, ["*"], sub=caller) as http:
            assert wait_until_final(http, task_id)["state"] == "SUCCESS"
        time.sleep(1)

    assert [a.status_code for a in answers] == [202] * 8
    assert [str(row.task_id) for row in _rows(db, caller)] == [task_id]
    assert events.count("task-received", task_id) == 1
    assert events.count("task-succeeded", task_id) == 1


def test_key_reused_with_other_args_is_409(client: httpx.Client):
    key = unique("key")
    first = client.post("/v1/tasks/events.publish", json={"args": {}, "idempotency_key": key})
    assert first.status_code == 202
    response = client.post(
        "/v1/tasks/events.publish", json={"args": {"bogus": 1}, "idempotency_key": key}
    )
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["type"] == "idempotency_conflict"
    assert key in error["message"]
    assert first.json()["task_id"] in error["message"]


def test_key_reused_for_another_task_is_409(client: httpx.Client):
    key = unique("key")
    client.post("/v1/tasks/events.publish", json={"args": {}, "idempotency_key": key})
    response = client.post(
        "/v1/tasks/maintenance.reconcile", json={"args": {}, "idempotency_key": key}
    )
    assert response.status_code == 409


def test_keys_belong_to_their_caller(api_url: str):
    key = unique("key")
    task_ids = set()
    for _ in range(2):
        with client_for(api_url, ["*"]) as http:
            response = http.post(
                "/v1/tasks/events.publish", json={"args": {}, "idempotency_key": key}
            )
            task_ids.add(response.json()["task_id"])
    assert len(task_ids) == 2


def test_wait_answers_with_the_final_status(worker, client: httpx.Client):
    response = client.post("/v1/tasks/events.publish", json={"args": {}, "wait": 20})
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "SUCCESS"
    assert body["name"] == "events.publish"
    assert isinstance(body["result"]["published"], int)
    assert "status_url" not in body


def test_wait_that_runs_out_answers_202_with_the_current_state(worker, client: httpx.Client):
    response = client.post(
        "/v1/tasks/events.publish", json={"args": {}, "countdown": 5, "wait": 0.2}
    )
    assert response.status_code == 202
    assert response.json()["state"] == "PENDING"
    assert "result" not in response.json()


def test_countdown_delays_the_run(worker, client: httpx.Client):
    started = time.monotonic()
    response = client.post(
        "/v1/tasks/events.publish", json={"args": {}, "countdown": 1, "wait": 20}
    )
    assert response.status_code == 200
    assert response.json()["state"] == "SUCCESS"
    assert time.monotonic() - started >= 0.9


def test_prepare_task_raises_the_errors_the_routes_answer():
    with pytest.raises(DomainError) as raised:
        prepare_task("peer.nonexistent", {}, caller=unique("cli"))
    unknown = api_error(raised.value)
    assert (unknown.status, unknown.type) == (404, "not_found")
    with pytest.raises(DomainError) as raised:
        prepare_task("events.publish", {"bogus": 1}, caller=unique("cli"))
    invalid = api_error(raised.value)
    assert (invalid.status, invalid.message) == (
        422,
        "args.bogus: Extra inputs are not permitted",
    )
    with pytest.raises(DomainError) as raised:
        prepare_task("events.publish", {}, caller=unique("cli"), wait=31)
    too_long = api_error(raised.value)
    assert too_long.status == 422


def test_one_batch_records_new_tasks_and_answers_known_keys(database):
    caller, key = unique("batch"), unique("key")
    tasks = [
        prepare_task("events.publish", {}, caller=caller, idempotency_key=key),
        prepare_task("events.publish", {}, caller=caller, idempotency_key=key),
        prepare_task("maintenance.reconcile", {}, caller=caller, idempotency_key=key),
        prepare_task("events.publish", {}, caller=caller),
    ]
    with accepting_connection() as connection:
        answers = record_tasks(connection, tasks)
    first, repeat, conflict, other = answers
    assert first == repeat == tasks[0].task_id
    assert isinstance(conflict, DomainError) and api_error(conflict).status == 409
    assert other == tasks[3].task_id


def test_nul_characters_are_422_naming_the_field(client: httpx.Client):
    in_args = client.post(
        "/v1/tasks/peer.request",
        json={"args": {"user_id": 1, "difficulty": "Easy", "topic": "gra\u0000phs"}},
    )
    in_key = client.post(
        "/v1/tasks/events.publish", json={"args": {}, "idempotency_key": "k\u0000"}
    )
    assert in_args.status_code == in_key.status_code == 422
    assert in_args.json()["error"]["message"] == (
        "args.topic: must not contain NUL characters (\\u0000)"
    )
    assert in_key.json()["error"]["message"].startswith("idempotency_key: must not contain NUL")


def test_integers_beyond_bigint_are_422_naming_the_field(client: httpx.Client):
    response = client.post(
        "/v1/tasks/peer.cancel",
        json={"args": {"request_id": str(uuid.uuid4()), "user_id": 2**63}},
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(f"args.user_id: {2**63} is out of range")


def test_a_countdown_waits_in_postgresql_not_in_the_broker(client: httpx.Client, db):
    response = client.post("/v1/tasks/events.publish", json={"args": {}, "countdown": 600})
    row = db.get(TaskRun, response.json()["task_id"])
    assert row is not None
    assert row.dispatched_at is None
    assert (row.due_at - row.accepted_at).total_seconds() == pytest.approx(600, abs=1)


def test_many_waiting_calls_do_not_slow_the_liveness_probe(api_url: str):
    async def waiting_calls(ready: threading.Event) -> None:
        limits = httpx.Limits(max_connections=300)
        headers = {"Authorization": f"Bearer {token(['*'])}"}
        async with httpx.AsyncClient(
            base_url=api_url, headers=headers, timeout=40, limits=limits
        ) as http:
            # A countdown keeps every task pending, so every call waits its full 20 s.
            body = {"args": {}, "countdown": 60, "wait": 20}
            calls = [http.post("/v1/tasks/events.publish", json=body) for _ in range(250)]
            pending = asyncio.gather(*calls)
            await asyncio.sleep(3)
            ready.set()
            answers = await pending
        assert {a.status_code for a in answers} == {202}

    ready = threading.Event()
    waiters = threading.Thread(target=lambda: asyncio.run(waiting_calls(ready)))
    waiters.start()
    assert ready.wait(30)
    slowest = 0.0
    with httpx.Client(base_url=api_url, timeout=10) as probe:
        for _ in range(20):
            started = time.monotonic()
            assert probe.get("/healthz").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
    waiters.join(60)
    assert slowest < 0.1
