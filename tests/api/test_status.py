"""`GET /v1/tasks/{task_id}`: known ids only, results, typed errors with their status."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.orm import Session

from api.submission import status_body, task_error
from core.errors import Conflict, MatchingError
from models.platform import EnqueuedTask
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
    task_id = uuid.uuid4()
    db.add(
        EnqueuedTask(
            task_id=task_id, name="maintenance.reconcile", args={}, caller=unique("progress")
        )
    )
    db.commit()
    # What ProgressReporter.progress stores while a batched task runs.
    app.backend.store_result(str(task_id), {"progress": {"done": 2, "total": 5}}, "STARTED")
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.json() == {
        "task_id": str(task_id),
        "name": "maintenance.reconcile",
        "state": "STARTED",
        "progress": {"done": 2, "total": 5},
    }


def test_domain_errors_keep_their_status_and_others_are_500():
    assert task_error(Conflict("mentor is full")) == {
        "type": "Conflict",
        "message": "mentor is full",
        "status": 409,
    }
    assert task_error(ZeroDivisionError("division by zero\n  File x.py, line 3")) == {
        "type": "ZeroDivisionError",
        "message": "division by zero",
        "status": 500,
    }
    assert task_error(RuntimeError())["message"] == "RuntimeError (details in the worker log)"


def test_celery_states_fold_into_the_five_public_ones():
    def state(raw: str, result: object = None) -> dict:
        return status_body("t", "n", {"status": raw, "result": result})

    assert state("RECEIVED")["state"] == "PENDING"
    assert state("STARTED", {"pid": 1, "hostname": "w"}) == {
        "task_id": "t",
        "name": "n",
        "state": "STARTED",
    }
    assert state("RETRY")["state"] == "RETRY"
    assert state("SUCCESS", None) == {
        "task_id": "t",
        "name": "n",
        "state": "SUCCESS",
        "result": None,
    }
    revoked = state("REVOKED", MatchingError("no"))
    assert revoked["state"] == "FAILURE"
    assert revoked["error"]["status"] == 400
