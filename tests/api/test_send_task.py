"""A sibling service's own Celery app, knowing only the broker and backend URLs, reaches
matchops tasks by name (contract section 4), and an operator's token reads the outcome."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from celery import Celery
from sqlalchemy import func, select

from models import MatchRequest
from tests.api.support import client_for
from tests.factories import make_user, unique
from tests.support import sent_twice_with_own_id, task_run

# Runs in a separate interpreter, from an empty folder, in isolated mode: nothing of
# matchops can be imported, no routes, no queue name; it sends to Celery's default queue.
BARE_APP = """
import json, os, sys
from celery import Celery

app = Celery(broker=os.environ["BROKER_URL"], backend=os.environ["RESULT_BACKEND"])
result = app.send_task(sys.argv[1], kwargs=json.loads(sys.argv[2]))
print(json.dumps({"task_id": result.id, "result": result.get(timeout=60)}))
"""


def _send_from_bare_app(folder: Path, name: str, kwargs: dict[str, object]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-I", "-c", BARE_APP, name, json.dumps(kwargs)],
        cwd=folder,
        env={
            "BROKER_URL": os.environ["BROKER_URL"],
            "RESULT_BACKEND": os.environ["RESULT_BACKEND"],
            "PATH": os.environ.get("PATH", ""),
        },
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_send_task_from_a_bare_celery_app_runs_and_its_status_reads_through_the_api(
    worker, db, tmp_path, api_url: str
):
    user = make_user(db)
    topic = unique("send-task")
    db.commit()

    answer = _send_from_bare_app(
        tmp_path, "peer.request", {"user_id": user.id, "difficulty": "Easy", "topic": topic}
    )

    result = answer["result"]
    assert isinstance(result, dict) and result["status"] == "pending"
    stored = db.scalars(select(MatchRequest).where(MatchRequest.topic == topic)).one()
    assert str(stored.id) == result["request_id"]
    assert stored.user_id == user.id

    with client_for(api_url, ["tasks:read"]) as operator:
        status = operator.get(f"/v1/tasks/{answer['task_id']}")
    assert status.status_code == 200, status.text
    assert status.json()["state"] == "SUCCESS"
    assert status.json()["name"] == "peer.request"
    assert status.json()["result"] == result
    with client_for(api_url, ["peer.*"]) as stranger:
        assert stranger.get(f"/v1/tasks/{answer['task_id']}").status_code == 404


def test_a_sibling_s_own_task_id_runs_once_and_the_second_send_replays_it(worker, db):
    user = make_user(db)
    topic = unique("own-id")
    db.commit()
    sibling = Celery(
        "sibling", broker=os.environ["BROKER_URL"], backend=os.environ["RESULT_BACKEND"]
    )
    task_id = unique("order")
    kwargs = {"user_id": user.id, "difficulty": "Easy", "topic": topic}

    first, second = sent_twice_with_own_id(sibling, "peer.request", kwargs, task_id)

    # Without the replay the second delivery would be refused as a duplicate request.
    assert second == first
    assert first["status"] == "pending"
    assert db.scalar(select(func.count()).where(MatchRequest.user_id == user.id)) == 1
    run = task_run(task_id)
    assert (run.state, run.deliveries, run.caller) == ("SUCCESS", 2, "send_task")
