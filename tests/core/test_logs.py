"""Routine lines (each task received and succeeded, each HTTP call answered below 400)
stay out of the logs unless LOG_SUCCESSES asks for them; refusals and failures stay in.
Real workers and a real API process, at INFO."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import httpx
import pytest
from celery.app.trace import LOG_RECEIVED, LOG_RETRY, LOG_SUCCESS

from core.errors import NotFound
from core.logs import CALLS_LOGGER, SUCCEEDED_LOGGER, RefusedCalls, WithoutFormats
from tests.api.support import api_log, api_process
from tests.factories import make_user, unique
from tests.support import run_task, wait_for, worker_taking_over


def _record(logger: str, msg: str, args: tuple[object, ...] | dict[str, object]):
    return logging.getLogger(logger).makeRecord(logger, logging.INFO, __file__, 1, msg, args, None)


def test_the_filters_drop_routine_records_and_keep_the_rest():
    tasks = WithoutFormats(LOG_RECEIVED, LOG_SUCCESS)
    context = {"id": "t-1", "name": "peer.request", "runtime": 0.01, "return_value": "{}"}
    assert not tasks.filter(_record(SUCCEEDED_LOGGER, LOG_SUCCESS, context))
    assert not tasks.filter(_record(SUCCEEDED_LOGGER, LOG_RECEIVED, context))
    assert tasks.filter(_record(SUCCEEDED_LOGGER, LOG_RETRY, {**context, "exc": "later"}))

    calls = RefusedCalls()
    access = '%s - "%s %s HTTP/%s" %d'
    assert not calls.filter(_record(CALLS_LOGGER, access, ("a:1", "GET", "/healthz", "1.1", 200)))
    assert not calls.filter(_record(CALLS_LOGGER, access, ("a:1", "GET", "/docs", "1.1", 307)))
    assert calls.filter(_record(CALLS_LOGGER, access, ("a:1", "POST", "/v1/x", "1.1", 429)))
    assert calls.filter(_record(CALLS_LOGGER, access, ("a:1", "GET", "/readyz", "1.1", 503)))
    assert calls.filter(_record(CALLS_LOGGER, "Started server process [%d]", (42,)))


def _lines_naming(path: Path, task_id: str) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if task_id in line)


@pytest.mark.parametrize("asked", [False, True], ids=["default", "LOG_SUCCESSES"])
def test_a_worker_logs_each_task_only_when_asked_and_every_refusal(worker, db, asked):
    user = make_user(db)
    db.commit()
    env = {"LOG_SUCCESSES": "true"} if asked else {}
    # One pool process: the success's line, if any, is written before the refusal runs.
    with worker_taking_over(worker, "interactive", f"lines-{asked}", env, concurrency=1) as taking:
        done = run_task("peer.request", user_id=user.id, difficulty="Easy", topic=unique("t"))
        with pytest.raises(NotFound):
            run_task("peer.explain", request_id=str(uuid.uuid4()))
        wait_for(lambda: "raised expected" in taking.log_path.read_text(), what="the refusal")

    succeeded = _lines_naming(taking.log_path, done["request_id"])
    assert ("succeeded in" in succeeded) is asked
    received = taking.log_path.read_text().count("Task peer.request[")
    assert (received > 0) is asked


@pytest.mark.parametrize("asked", [False, True], ids=["default", "LOG_SUCCESSES"])
def test_the_api_logs_each_call_only_when_asked_and_every_refusal(asked):
    env = {"LOG_SUCCESSES": "true"} if asked else {}
    with api_process(log_level="info", **env) as url:
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{url}/v1/tasks", timeout=5).status_code == 401
        log = api_log(url)
        wait_for(lambda: '"GET /v1/tasks HTTP/1.1" 401' in log.read_text(), what="the refusal")

    assert ('"GET /healthz HTTP/1.1" 200' in log.read_text()) is asked
