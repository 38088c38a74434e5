"""`matchops enqueue`, `status` and `migrate` against the real database, broker and worker."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from core.settings import get_settings
from runtime.migrate import alembic_config, recreate_schema
from runtime.polling import poll_until
from tests.factories import next_id, unique
from tests.runtime.commands import matchops
from tests.support import queue_taken_from, task_finished, wait_for
from workers.app import app


def test_enqueue_waits_for_the_result_and_status_reads_it(worker):
    done = matchops("enqueue", "maintenance.reconcile", "--wait", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["name"] == "maintenance.reconcile"
    assert answer["state"] == "SUCCESS"
    assert "task_runs_pruned" in answer["result"]

    status = matchops("status", answer["task_id"])
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == answer


def test_enqueue_without_wait_answers_pending():
    done = matchops("enqueue", "events.publish")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["state"] == "PENDING"
    assert answer["status_url"] == f"/v1/tasks/{answer['task_id']}"


def test_same_idempotency_key_gives_the_same_task():
    key = f"cli-{uuid.uuid4().hex}"
    first = matchops("enqueue", "events.publish", "--idempotency-key", key)
    again = matchops("enqueue", "events.publish", "--idempotency-key", key)
    assert first.returncode == again.returncode == 0
    assert json.loads(first.stdout)["task_id"] == json.loads(again.stdout)["task_id"]


def test_args_outside_the_schema_are_refused_with_the_field():
    done = matchops("enqueue", "maintenance.reconcile", "--arg", "dry_run=true")
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "validation_error"
    assert "args.dry_run" in error["message"]
    assert "Traceback" not in done.stderr


def test_status_of_an_unknown_task_is_not_found():
    for task_id in (str(uuid.uuid4()), unique("order")):
        done = matchops("status", task_id)
        assert done.returncode == 1
        assert json.loads(done.stdout)["error"]["type"] == "not_found"


def test_status_reads_a_task_sent_under_a_sibling_s_own_id(worker):
    task_id = unique("order")
    result = app.send_task("events.publish", task_id=task_id, ignore_result=False)
    published = result.get(timeout=60)
    done = matchops("status", task_id)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["task_id"], answer["name"], answer["state"]) == (
        task_id,
        "events.publish",
        "SUCCESS",
    )
    assert answer["result"] == published


def test_migrate_brings_an_empty_database_to_head():
    url = make_url(get_settings().db_url)
    scratch = url.set(database=f"{url.database}_migrate").render_as_string(hide_password=False)
    recreate_schema(scratch)
    done = matchops("migrate", env={"DATABASE_URL": scratch})
    assert done.returncode == 0, done.stderr
    assert "at head" in done.stdout

    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    engine = create_engine(scratch)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head
        assert {"users", "outbox", "task_runs", "match_requests"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()


def test_migrate_names_an_unreachable_database():
    done = matchops(
        "migrate", env={"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nothing"}
    )
    assert done.returncode == 3
    assert "cannot reach the database (DATABASE_URL)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_failed_task_exits_1_from_enqueue_and_from_status(worker):
    done = matchops("enqueue", "mentorship.rank", "--arg", f"mentee_id={next_id()}", "--wait", "20")
    assert done.returncode == 1, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["state"] == "FAILURE"
    assert answer["error"]["status"] == 404
    status = matchops("status", answer["task_id"])
    assert status.returncode == 1
    assert json.loads(status.stdout)["error"] == answer["error"]


def test_a_bad_wait_gets_the_http_answer():
    # tests/api/test_enqueue.py checks the same body over HTTP.
    done = matchops("enqueue", "events.publish", "--wait", "31")
    assert done.returncode == 1
    assert json.loads(done.stdout) == {
        "error": {
            "type": "validation_error",
            "message": "wait: must be above 0 and at most 30 seconds, got 31",
        }
    }


def test_enqueue_and_status_exit_3_when_the_database_is_unreachable():
    unreachable = {"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nothing"}
    for command in (("enqueue", "events.publish"), ("status", str(uuid.uuid4()))):
        done = matchops(*command, env=unreachable)
        assert done.returncode == 3, done.stdout + done.stderr
        assert json.loads(done.stdout)["error"]["type"] == "unavailable"


def test_enqueue_exits_3_naming_the_broker_when_it_is_unreachable():
    done = matchops("enqueue", "events.publish", env={"BROKER_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 3, done.stdout + done.stderr
    # tests/api/test_outages.py checks the same body over HTTP.
    assert json.loads(done.stdout) == {
        "error": {
            "type": "unavailable",
            "message": "the broker is unreachable; nothing was changed, try again later",
        }
    }


def test_enqueue_into_a_queue_behind_is_refused_with_its_own_exit_status(worker):
    behind = {"MAX_QUEUE_WAIT_SECONDS": "1"}
    args = ("enqueue", "mentorship.rebuild_stats")
    with queue_taken_from(worker, "maintenance"):
        first = matchops(*args, env=behind)
        assert first.returncode == 0, first.stdout + first.stderr
        answers = []

        def refused_once() -> bool:
            answers.append(matchops(*args, env=behind))
            return answers[-1].returncode != 0

        assert poll_until(refused_once, 30, 0.2)
    accepted = [json.loads(done.stdout)["task_id"] for done in (first, *answers[:-1])]
    wait_for(lambda: all(task_finished(task_id) for task_id in accepted), timeout=60)
    refused = answers[-1]
    assert refused.returncode == 4, refused.stdout + refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert error["type"] == "overloaded"
    assert "'maintenance' queue" in error["message"]
    assert "Traceback" not in refused.stderr
