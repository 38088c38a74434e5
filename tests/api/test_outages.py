"""A real API process whose broker or database is down: 503 naming it, nothing half-enqueued."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from core.settings import get_settings
from models.platform import TaskRun
from tests.api.support import api_process, client_for
from tests.factories import unique

# Nothing listens on port 1.
CLOSED_BROKER = "redis://127.0.0.1:1/0"


def _closed_database_url() -> str:
    url = make_url(get_settings().db_url).set(host="127.0.0.1", port=1)
    return url.render_as_string(hide_password=False)


def _recorded(db, caller: str) -> int:
    return int(
        db.scalar(select(func.count()).select_from(TaskRun).where(TaskRun.caller == caller)) or 0
    )


def test_broker_down_is_503_and_leaves_no_record(db):
    caller = unique("no-broker")
    env = {"BROKER_URL": CLOSED_BROKER, "RESULT_BACKEND": get_settings().backend}
    with api_process(**env) as url, client_for(url, ["*"], sub=caller) as http:
        response = http.post("/v1/tasks/events.publish", json={"args": {}, "idempotency_key": "k"})
        ready = http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "unavailable"
    assert "broker" in response.json()["error"]["message"]
    assert _recorded(db, caller) == 0
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "broker": "unreachable"}
    assert "broker" in ready.json()["error"]["message"]
    assert "database" not in ready.json()["error"]["message"]


@pytest.mark.rabbitmq
def test_an_amqp_refusal_is_503_naming_the_broker(db, rabbitmq_vhost_refused: str):
    caller = unique("amqp-refused")
    env = {"BROKER_URL": rabbitmq_vhost_refused, "RESULT_BACKEND": get_settings().backend}
    with api_process(**env) as url, client_for(url, ["*"], sub=caller) as http:
        response = http.post("/v1/tasks/events.publish", json={"args": {}})
    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "type": "unavailable",
            "message": "the broker is unreachable; nothing was changed, try again later",
        }
    }
    assert _recorded(db, caller) == 0


def test_the_api_needs_no_result_backend(db):
    # Outcomes are read from PostgreSQL: a dead result backend changes nothing here.
    caller = unique("no-backend")
    with (
        api_process(RESULT_BACKEND=CLOSED_BROKER) as url,
        client_for(url, ["*"], sub=caller) as http,
    ):
        response = http.post("/v1/tasks/events.publish", json={"args": {}, "countdown": 60})
        status = http.get(response.json()["status_url"])
    assert response.status_code == 202
    assert status.json()["state"] == "PENDING"
    assert _recorded(db, caller) == 1


def test_database_down_is_503_naming_the_database():
    with api_process(DATABASE_URL=_closed_database_url()) as url, client_for(url, ["*"]) as http:
        enqueue = http.post("/v1/tasks/events.publish", json={"args": {}})
        keyed = http.post("/v1/tasks/events.publish", json={"args": {}, "idempotency_key": "k"})
        status = http.get(f"/v1/tasks/{uuid.uuid4()}")
        ready = http.get("/readyz")
    for response in (enqueue, keyed, status):
        assert response.status_code == 503
        assert response.json() == {
            "error": {
                "type": "unavailable",
                "message": "the database is unreachable; nothing was changed, try again later",
            }
        }
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "unreachable", "broker": "ok"}
    assert ready.json()["error"]["message"] == "not ready: database unreachable"


def test_metrics_name_the_part_that_is_down():
    with api_process(BROKER_URL=CLOSED_BROKER) as url, client_for(url, ["metrics:read"]) as http:
        no_broker = http.get("/metrics")
    with (
        api_process(DATABASE_URL=_closed_database_url()) as url,
        client_for(url, ["metrics:read"]) as http,
    ):
        no_database = http.get("/metrics")
    assert no_broker.status_code == no_database.status_code == 503
    assert "the broker is unreachable" in no_broker.json()["error"]["message"]
    assert "the database is unreachable" in no_database.json()["error"]["message"]
