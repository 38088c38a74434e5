"""Tokens: 401 without a valid one, 403 outside its scope, and start-up without a secret."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from sqlalchemy import func, select

from api.app import create_app
from api.auth import Caller, decode_token, issue_token
from api.errors import ApiError
from core.settings import MissingSetting, get_settings
from models.platform import TaskRun
from tests.api.support import SECRET, client_for, token
from tests.factories import unique


def test_token_round_trip_keeps_sub_and_scope():
    caller = decode_token(
        SECRET, issue_token(SECRET, "peer-app", ["peer.*", "events.publish"], 60), 3600
    )
    assert caller == Caller(sub="peer-app", scopes=("peer.*", "events.publish"))


def test_scope_patterns_match_task_names_like_fnmatch():
    caller = Caller(sub="x", scopes=("peer.*", "maintenance.reconcile"))
    assert caller.may_use("peer.request")
    assert caller.may_use("maintenance.reconcile")
    assert not caller.may_use("mentorship.rank")
    assert not caller.may_use("maintenance.other")
    assert Caller(sub="x", scopes=("*",)).may_use("carpool.member_left")
    assert not Caller(sub="x", scopes=()).may_use("peer.request")


def test_a_token_whose_scope_is_not_a_list_is_invalid():
    forged = jwt.encode({"sub": "x", "exp": int(time.time()) + 60, "scope": "*"}, SECRET, "HS256")
    with pytest.raises(ApiError) as raised:
        decode_token(SECRET, forged, 3600)
    assert raised.value.status == 401
    assert "scope" in raised.value.message


def test_missing_token_is_401(anonymous: httpx.Client):
    response = anonymous.post("/v1/tasks/events.publish", json={"args": {}})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "unauthorized"
    assert "Authorization: Bearer" in response.json()["error"]["message"]
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert anonymous.get("/v1/tasks").status_code == 401


def test_token_signed_with_another_secret_is_401(api_url: str):
    with client_for(api_url, ["*"], secret="another-secret-of-at-least-32-bytes!!") as http:
        response = http.get("/v1/tasks")
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "type": "unauthorized",
            "message": "invalid token: it is not signed with this API's secret",
        }
    }


def test_garbage_token_is_401_without_the_decoder_s_words(anonymous: httpx.Client):
    for garbage in ("not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.x"):
        response = anonymous.get("/v1/tasks", headers={"Authorization": f"Bearer {garbage}"})
        assert response.status_code == 401
        assert response.json()["error"]["message"] == (
            "invalid token: not a JWT signed HS256; ask for a new one (matchops token)"
        )


def test_expired_token_is_401(anonymous: httpx.Client):
    expired = token(["*"], ttl=-5)
    response = anonymous.get("/v1/tasks", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_task_outside_scope_is_403_and_nothing_is_enqueued(api_url: str, db):
    sub = unique("scoped")
    with client_for(api_url, ["peer.*"], sub=sub) as http:
        response = http.post("/v1/tasks/events.publish", json={"args": {}})
    assert response.status_code == 403
    assert response.json()["error"] == {
        "type": "forbidden",
        "message": "task 'events.publish' is outside this token's scope (scope: peer.*)",
    }
    count = db.scalar(select(func.count()).select_from(TaskRun).where(TaskRun.caller == sub))
    assert count == 0


def test_another_callers_task_is_404_unless_the_scope_covers_tasks_read(
    api_url: str, client: httpx.Client
):
    task_id = client.post("/v1/tasks/events.publish", json={"args": {}}).json()["task_id"]
    # Even a scope that covers the task's name does not make another caller's task readable.
    with client_for(api_url, ["events.*", "peer.*"]) as http:
        hidden = http.get(f"/v1/tasks/{task_id}")
    with client_for(api_url, ["tasks:read"]) as http:
        shown = http.get(f"/v1/tasks/{task_id}")
    assert hidden.status_code == 404
    assert hidden.json() == {
        "error": {"type": "not_found", "message": f"unknown task id {task_id!r}"}
    }
    assert shown.status_code == 200
    assert shown.json()["name"] == "events.publish"


def test_a_caller_reads_its_own_task_without_tasks_read(api_url: str):
    with client_for(api_url, ["events.*"]) as http:
        task_id = http.post("/v1/tasks/events.publish", json={"args": {}}).json()["task_id"]
        response = http.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200


def test_a_token_living_longer_than_the_limit_is_401(api_url: str):
    too_long = get_settings().max_token_ttl_seconds + 3600
    with client_for(api_url, ["*"], ttl=too_long) as http:
        response = http.get("/v1/tasks")
    assert response.status_code == 401
    assert "MAX_TOKEN_TTL_SECONDS" in response.json()["error"]["message"]


def test_create_app_refuses_a_short_auth_secret(fresh_settings, monkeypatch):
    monkeypatch.setenv("AUTH_SECRET", "x" * 31)
    with pytest.raises(MissingSetting, match="AUTH_SECRET is 31 bytes long"):
        create_app()


def test_create_app_refuses_to_start_without_auth_secret(fresh_settings, monkeypatch):
    monkeypatch.delenv("AUTH_SECRET", raising=False)
    with pytest.raises(MissingSetting, match="AUTH_SECRET"):
        create_app()
