"""The task base: typed domain errors through the result backend, args validation,
and retries across a real database outage."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.engine import make_url

from core.errors import MatchingError, status_of
from core.outages import TRANSIENT_ERRORS
from core.settings import get_settings
from runtime.polling import poll_until
from tests.proxy import OutageProxy
from tests.support import queue_taken_from, running_worker, send
from workers.app import load_tasks
from workers.base import TaskArgs, describe_validation_error, parse_args, task_specs


class _Args(TaskArgs):
    count: int


def test_bad_kwargs_fail_as_matching_error_with_type_message_and_status(worker):
    result = send("events.publish", bogus=1)
    with pytest.raises(MatchingError) as raised:
        result.get(timeout=30)
    assert "bogus" in str(raised.value)
    assert result.state == "FAILURE"
    assert type(raised.value) is MatchingError
    # What another service reads from the backend: type, module and message as JSON.
    raw = json.loads(result.backend.get(result.backend.get_key_for_task(result.id)))
    assert raw["result"]["exc_type"] == "MatchingError"
    assert raw["result"]["exc_module"] == "core.errors"
    assert status_of(raw["result"]["exc_type"]) == 400


def test_parse_args_names_the_field_and_reason():
    with pytest.raises(MatchingError) as raised:
        parse_args("x.y", _Args, {"count": "many"})
    assert "x.y: count:" in str(raised.value)
    assert parse_args("x.y", _Args, {"count": 3}).count == 3


def test_describe_validation_error_lists_every_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as raised:
        _Args.model_validate({"extra": 1})
    text = describe_validation_error(raised.value)
    assert "count: Field required" in text
    assert "extra: Extra inputs are not permitted" in text


def test_every_task_is_registered_with_an_args_model_and_description():
    load_tasks()
    specs = task_specs()
    assert {"events.publish", "maintenance.reconcile"} <= set(specs)
    for spec in specs.values():
        assert spec.description
        assert issubclass(spec.args_model, TaskArgs)


def test_domain_errors_are_never_retried_but_outages_are():
    from celery import current_app

    publish = current_app.tasks["events.publish"]
    assert MatchingError not in TRANSIENT_ERRORS
    assert publish.dont_autoretry_for and issubclass(MatchingError, publish.dont_autoretry_for[0])


def test_database_outage_is_retried_until_the_database_is_back(worker):
    url = make_url(get_settings().db_url)
    socket_dir = url.query.get("host")
    target: tuple[str, int] | str
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):
        # Embedded PostgreSQL listens on a unix socket only.
        target = f"{socket_dir}/.s.PGSQL.{url.port or 5432}"
        url = url.difference_update_query(["host"])
    else:
        target = (url.host or "127.0.0.1", url.port or 5432)
    # The session worker steps aside from the queue, so only the worker behind the
    # outage can take the task.
    with queue_taken_from(worker, "maintenance"), OutageProxy(target) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        with running_worker(
            "outage", queues="maintenance", concurrency=1, extra_env={"DATABASE_URL": proxied}
        ):
            result = send("maintenance.reconcile")
            poll_until(lambda: result.state == "RETRY", 30, 0.2)
            assert result.state == "RETRY"
            proxy.up = True
            answer = result.get(timeout=90)
    assert "outbox_stuck" in answer
    assert result.backend.get_task_meta(result.id)["retries"] >= 1
