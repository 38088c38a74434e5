"""`GET /v1/tasks/{task_id}`: known ids only, results, typed errors with their status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy.orm import Session

from core.errors import Conflict, describe_failure
from models.platform import TaskProgress, TaskRun
from tests.api.support import wait_until_final
from tests.factories import unique
from tests.support import send
from workers.app import app


def test_unknown_task_id_is_404(client: httpx.Client):
    task_id = str(uuid.uuid4())
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"type": "not_found", "message": f"unknown task id {task_id!r}"}
    }


def test_malformed_task_id_is_404(client: httpx.Client):
    response = client.get("/v1/tasks/not-a-task-id")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def test_enqueued_task_is_known_before_a_worker_takes_it(client: httpx.Client):
    task_id = client.post("/v1/tasks/events.publish", json={"args": {}, "countdown": 5}).json()[
        "task_id"
    ]
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200
    assert response.json() == {"task_id": task_id, "name": "events.publish", "state": "PENDING"}


def test_domain_error_of_a_directly_sent_task_keeps_its_status(worker, client: httpx.Client):
    # A sibling service sends straight to the broker; bad kwargs fail as MatchingError (400).
    sent = send("events.publish", bogus=1)
    body = wait_until_final(client, sent.id)
    assert body["state"] == "FAILURE"
    assert body["name"] == "events.publish"
    assert body["error"]["type"] == "MatchingError"
    assert body["error"]["status"] == 400
    assert "bogus" in body["error"]["message"]
    assert "Traceback" not in str(body)
    assert "result" not in body


def test_success_carries_the_result(worker, client: httpx.Client):
    task_id = client.post("/v1/tasks/maintenance.reconcile", json={"args": {}}).json()["task_id"]
    body = wait_until_final(client, task_id)
    assert body["state"] == "SUCCESS"
    assert body["name"] == "maintenance.reconcile"
    assert "outbox_stuck" in body["result"]


def test_progress_of_a_running_task_is_shown(client: httpx.Client, db: Session):
    # Any string is a task id, not only a UUID.
    task_id = unique("order")
    caller = unique("progress")
    db.add(
        TaskRun(
            task_id=task_id,
            name="maintenance.reconcile",
            args={},
            caller=caller,
            origin="api",
            state="STARTED",
        )
    )
    db.flush()
    # What ProgressReporter.progress stores while a task with its own transactions runs.
    db.add(TaskProgress(task_id=task_id, progress={"done": 2, "total": 5}))
    db.commit()
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.json() == {
        "task_id": task_id,
        "name": "maintenance.reconcile",
        "state": "STARTED",
        "progress": {"done": 2, "total": 5},
    }


def test_a_record_older_than_the_ledger_reads_its_outcome_from_the_result_backend(
    client: httpx.Client, db: Session
):
    task_id = str(uuid.uuid4())
    db.add(
        TaskRun(
            task_id=task_id,
            name="mentorship.select",
            args={},
            caller=unique("legacy"),
            origin="api",
            state=None,
            finished_at=datetime.now(UTC),
        )
    )
    db.commit()
    app.backend.store_result(task_id, Conflict("mentor is full"), "FAILURE")
    assert client.get(f"/v1/tasks/{task_id}").json() == {
        "task_id": task_id,
        "name": "mentorship.select",
        "state": "FAILURE",
        "error": {"type": "Conflict", "message": "mentor is full", "status": 409},
    }


def test_domain_errors_keep_their_status_and_others_are_500():
    assert describe_failure(Conflict("mentor is full")) == {
        "type": "Conflict",
        "message": "mentor is full",
        "status": 409,
    }
    assert describe_failure(ZeroDivisionError("division by zero\n  File x.py, line 3")) == {
        "type": "ZeroDivisionError",
        "message": "division by zero",
        "status": 500,
    }
    assert describe_failure(RuntimeError())["message"] == "RuntimeError (details in the worker log)"
