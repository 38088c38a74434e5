"""The result backend writes a success without reading first, and reads before any
other state, on a real Redis; a worker started from Celery's command line uses it."""

from __future__ import annotations

import uuid

import redis
from celery import states

from celeryconfig import celery_config
from core.redis_options import REDIS_CLIENT_OPTIONS
from core.result_backend import BACKEND, Backend
from core.settings import Settings, get_settings
from tests.support import redis_commands_naming, wait_for, worker_taking_over
from workers.app import app


def test_a_success_is_written_without_reading_and_other_states_read_first():
    backend = app.backend
    assert isinstance(backend, Backend)  # the suite's result backend is Redis
    task_id = str(uuid.uuid4())
    key = backend.get_key_for_task(task_id).decode()

    retried = redis_commands_naming(key, lambda: backend.store_result(task_id, None, states.RETRY))
    succeeded = redis_commands_naming(
        key, lambda: backend.store_result(task_id, {"n": 1}, states.SUCCESS)
    )

    assert "GET" in retried
    assert "GET" not in succeeded and "SETEX" in succeeded
    assert backend.get_task_meta(task_id, cache=False)["result"] == {"n": 1}


def test_matchops_selects_it_for_redis_result_backends_only():
    for url, selected in (
        ("redis://127.0.0.1:6379/1", f"{BACKEND}+redis://127.0.0.1:6379/1"),
        ("rediss://redis.internal:6380/1", f"{BACKEND}+rediss://redis.internal:6380/1"),
        ("db+postgresql://results.internal/celery", "db+postgresql://results.internal/celery"),
    ):
        assert celery_config(Settings(result_backend=url))["result_backend"] == selected, url


def test_a_worker_started_from_the_command_line_stores_a_success_without_reading(worker):
    # Celery's command line copies RESULT_BACKEND into CELERY_RESULT_BACKEND, which Celery
    # lets win over the configured backend; the variable is set here as a deployment sets it.
    env = {"RESULT_BACKEND": get_settings().backend}
    task_id = str(uuid.uuid4())
    key = app.backend.get_key_for_task(task_id).decode()
    client = redis.Redis.from_url(get_settings().backend, **REDIS_CLIENT_OPTIONS)

    def run() -> None:
        app.send_task("events.publish", task_id=task_id, ignore_result=False)
        wait_for(lambda: client.exists(key), what="the stored result")

    with worker_taking_over(worker, "events", "result-backend", env):
        stored = redis_commands_naming(key, run)

    assert "SETEX" in stored
    assert "GET" not in stored
