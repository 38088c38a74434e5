"""The RabbitMQ path: quorum queues with a delivery limit, tasks through a worker on
RabbitMQ, a message that keeps killing its worker ending as FAILURE there too, and the
event relay publishing with confirms."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp.exceptions
import pytest
from celery import Celery
from kombu.connection import Connection
from kombu.entity import Queue
from sqlalchemy import func, select

from celeryconfig import DEAD_LETTER_QUEUE, QUEUE_NAMES, SIBLING_QUEUE
from core.errors import PreviousFailure
from core.outbox import emit_events
from core.relay import EVENTS_EXCHANGE
from core.settings import get_settings
from models import MatchRequest, OutboxEvent
from tests.factories import make_user, unique
from tests.support import (
    KILLING_WORKER,
    ROOT,
    WorkerProcess,
    running_worker,
    sent_twice_with_own_id,
    task_finished,
    task_run,
    wait_for,
)
from tests.workers.held import HELD_WITH_ROW_LOCKED, KILLED, LIMITS, WORKER_ARGS

# These tests share the run's one vhost: under xdist they run in one process
# (`tests.isolation.TOGETHER`).
pytestmark = pytest.mark.rabbitmq

QUEUE_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-delivery-limit": 20,
    "x-dead-letter-exchange": "matchops.dead",
}


def _on_rabbitmq(rabbitmq_url: str) -> dict[str, str]:
    # Results stay in Redis: only the broker moves.
    return {"BROKER_URL": rabbitmq_url, "RESULT_BACKEND": get_settings().backend}


def _send_from_matchops(
    env: dict[str, str], name: str, task_id: str, kwargs: dict[str, object] | None = None
) -> None:
    """Send as a process of this app configured for RabbitMQ would."""
    code = (
        "import sys; from workers.app import app; "
        f"app.send_task({name!r}, task_id={task_id!r}, kwargs={kwargs or {}!r})"
    )
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, check=True, timeout=60
    )


def test_tasks_run_through_quorum_queues_on_rabbitmq(database, rabbitmq_url: str):
    env = _on_rabbitmq(rabbitmq_url)
    task_id = str(uuid.uuid4())
    with running_worker("on-rabbitmq", queues="events", extra_env=env):
        _send_from_matchops(env, "events.publish", task_id)
        wait_for(lambda: task_finished(task_id), timeout=60, what="the task on RabbitMQ")
    assert task_run(task_id).state == "SUCCESS"
    # The queue exists as a quorum queue with our delivery limit and dead letters:
    # declaring it with the same arguments but as a classic queue is refused.
    arguments = {**QUEUE_ARGUMENTS, "x-queue-type": "classic"}
    with Connection(rabbitmq_url) as connection:
        channel = connection.channel()
        with pytest.raises(amqp.exceptions.PreconditionFailed, match="'x-queue-type'"):
            channel.queue_declare("events", durable=True, auto_delete=False, arguments=arguments)


def test_a_poison_message_ends_as_failure_on_rabbitmq(database, rabbitmq_url: str):
    env = {
        **_on_rabbitmq(rabbitmq_url),
        "TASK_MAX_DELIVERIES": "2",
    }
    task_id = str(uuid.uuid4())
    kill = {"MATCHOPS_TEST_KILL": f"claimed:{task_id}"}
    with running_worker(
        "poisoned-on-rabbitmq", queues="events", extra_env={**env, **kill}, entry=KILLING_WORKER
    ):
        _send_from_matchops(env, "events.publish", task_id)
        wait_for(lambda: task_finished(task_id), timeout=90, what="the task to be given up")
    run = task_run(task_id)
    assert (run.state, run.deliveries) == ("FAILURE", 3)
    assert run.error["message"] == "gave up after 2 deliveries"


def test_the_relay_publishes_events_to_rabbitmq_with_confirms(database, db, rabbitmq_url: str):
    env = _on_rabbitmq(rabbitmq_url)
    marker = uuid.uuid4().hex
    with Connection(rabbitmq_url) as connection:
        listening = Queue(
            f"test-events-{marker[:8]}", exchange=EVENTS_EXCHANGE, routing_key="#", auto_delete=True
        )
        listening(connection.default_channel).declare()
        emit_events(db, "match.found", [{"marker": marker}])
        db.commit()
        task_id = str(uuid.uuid4())
        with running_worker("relay-on-rabbitmq", queues="events", extra_env=env):
            _send_from_matchops(env, "events.publish", task_id)
            wait_for(lambda: task_finished(task_id), timeout=60, what="the relay on RabbitMQ")
        channel = connection.default_channel
        published = []
        while (message := listening(channel).get(no_ack=True)) is not None:
            published.append(message.payload["data"])
    assert task_run(task_id).state == "SUCCESS"
    # Events earlier tests left unpublished go out in the same relay: this one among them.
    assert {"marker": marker} in published
    # Marked published once relayed; that the relay waits for the broker's confirm is
    # shown by the refused publish below.
    published_at = db.scalar(
        select(OutboxEvent.published_at).where(OutboxEvent.data["marker"].astext == marker)
    )
    assert published_at is not None


def test_a_publish_the_broker_refuses_leaves_the_event_unpublished(database, db, rabbitmq_url: str):
    # A queue that is always full and refuses what it cannot take: RabbitMQ answers a
    # publish routed to it with a negative confirm, which only a publisher in confirm
    # mode hears of. Without confirms the relay would mark the event published, lost.
    env = _on_rabbitmq(rabbitmq_url)
    marker = uuid.uuid4().hex
    event_type = "carpool.match.removed"
    with Connection(rabbitmq_url) as connection:
        refusing = Queue(
            f"test-refusing-{marker[:8]}",
            exchange=EVENTS_EXCHANGE,
            routing_key=event_type,
            # Classic, whatever the vhost's default type: a classic queue refuses each
            # publish past its length at once.
            queue_arguments={
                "x-queue-type": "classic",
                "x-max-length": 0,
                "x-overflow": "reject-publish",
            },
        )
        bound = refusing(connection.default_channel)
        bound.declare()
        try:
            emit_events(db, event_type, [{"marker": marker}])
            db.commit()
            task_id = str(uuid.uuid4())
            with running_worker(
                "relay-refused-on-rabbitmq", queues="events", extra_env=env
            ) as relay:
                _send_from_matchops(env, "events.publish", task_id)
                # Retried as a broker outage, with backoff, until the retries run out.
                wait_for(lambda: task_finished(task_id), timeout=90, what="the refused relay")
        finally:
            bound.delete()
    assert task_run(task_id).state == "FAILURE"
    assert "amqp.exceptions.MessageNacked" in relay.log_path.read_text(errors="replace")
    db.rollback()
    published_at = db.scalar(
        select(OutboxEvent.published_at).where(OutboxEvent.data["marker"].astext == marker)
    )
    assert published_at is None


def test_a_bare_celery_app_sends_to_matchops_on_rabbitmq(database, db, rabbitmq_url: str):
    # A sibling with nothing but the URLs declares the default `celery` queue its own
    # way; matchops declares it the same way, so both can use it.
    user = make_user(db)
    db.commit()
    env = _on_rabbitmq(rabbitmq_url)
    with running_worker("celery-queue-on-rabbitmq", queues="celery", extra_env=env):
        sibling = Celery("sibling", broker=rabbitmq_url, backend=get_settings().backend)
        kwargs = {"user_id": user.id, "difficulty": "Easy", "topic": "graphs"}
        answer = sibling.send_task("peer.request", kwargs=kwargs).get(timeout=60)
    assert answer["user_id"] == user.id


def test_a_sibling_s_own_task_id_runs_once_and_replays_on_rabbitmq(database, db, rabbitmq_url: str):
    user = make_user(db)
    db.commit()
    env = _on_rabbitmq(rabbitmq_url)
    task_id = unique("order")
    kwargs = {"user_id": user.id, "difficulty": "Hard", "topic": unique("own-id")}
    with running_worker("own-ids-on-rabbitmq", queues="celery", extra_env=env):
        sibling = Celery("sibling", broker=rabbitmq_url, backend=get_settings().backend)
        first, second = sent_twice_with_own_id(sibling, "peer.request", kwargs, task_id)
    assert second == first
    assert db.scalar(select(func.count()).where(MatchRequest.user_id == user.id)) == 1
    run = task_run(task_id)
    assert (run.state, run.deliveries) == ("SUCCESS", 2)


def test_a_task_killed_at_its_hard_time_limit_ends_as_a_recorded_failure_on_rabbitmq(
    database, rabbitmq_url: str
):
    env = {**_on_rabbitmq(rabbitmq_url), **LIMITS}
    task_id = unique("held")
    sibling = Celery("sibling", broker=rabbitmq_url, backend=get_settings().backend)
    with running_worker("held-on-rabbitmq", queues="celery", extra_env=env, extra_args=WORKER_ARGS):
        sibling.send_task(HELD_WITH_ROW_LOCKED, task_id=task_id)
        wait_for(lambda: task_finished(task_id), timeout=30, what="the recorded time limit")
        # Acknowledged, not requeued: RabbitMQ would hand a requeued message back at once.
        time.sleep(3)
        run = task_run(task_id)
        assert (run.state, run.deliveries) == ("FAILURE", 1)
        assert run.error == {"type": "TimeLimitExceeded", "message": KILLED, "status": 500}
        sibling.AsyncResult(task_id).forget()
        again = sibling.send_task(HELD_WITH_ROW_LOCKED, task_id=task_id)
        with pytest.raises(PreviousFailure, match=re.escape(f"TimeLimitExceeded: {KILLED}")):
            again.get(timeout=20)
    assert task_run(task_id).deliveries == 2


def _rabbitmqctl(rabbitmq_url: str, *command: str) -> Any:
    """What `rabbitmqctl COMMAND -p VHOST` answers, as JSON, for this run's vhost."""
    assert shutil.which("rabbitmqctl"), "reading queue types and policies needs rabbitmqctl"
    vhost = unquote(urlsplit(rabbitmq_url).path[1:]) or "/"
    done = subprocess.run(
        ["rabbitmqctl", "-q", *command, "-p", vhost, "--formatter", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


def test_every_task_queue_is_quorum_with_a_delivery_limit_and_dead_letters(
    database, rabbitmq_url: str
):
    # A worker consuming every queue has declared each one: read them while it runs.
    with running_worker("every-queue-on-rabbitmq", extra_env=_on_rabbitmq(rabbitmq_url)):
        queues = {
            q["name"]: q
            for q in _rabbitmqctl(
                rabbitmq_url, "list_queues", "name", "type", "arguments", "policy"
            )
        }
        policies = {
            p["name"]: json.loads(p["definition"])
            for p in _rabbitmqctl(rabbitmq_url, "list_policies")
        }
    assert SIBLING_QUEUE in QUEUE_NAMES
    for name in QUEUE_NAMES:
        queue = queues[name]
        arguments = {key: value for key, _type, value in queue["arguments"]}
        policy = policies.get(queue["policy"], {})
        assert queue["type"] == "quorum", name
        limit = arguments.get("x-delivery-limit", policy.get("delivery-limit"))
        dead_letters = arguments.get("x-dead-letter-exchange", policy.get("dead-letter-exchange"))
        assert (name, limit, dead_letters) == (name, 20, "matchops.dead")


def _dead_letters_gauge(env: dict[str, str]) -> float:
    """`matchops_dead_letters` as a process of this app on that broker reads it."""
    code = "from api.series import dead_letters; print(next(dead_letters()).samples[0].value)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(done.stdout)


def _drained_dead_letters(rabbitmq_url: str) -> list[str]:
    """The task ids of the messages in `matchops.dead`, taken out of it."""
    with Connection(rabbitmq_url) as connection:
        dead = DEAD_LETTER_QUEUE(connection.default_channel)
        ids = []
        while (message := dead.get()) is not None:
            ids.append(message.headers.get("id"))
            message.ack()
    return ids


def test_a_poison_message_sent_to_celery_ends_in_matchops_dead(database, rabbitmq_url: str):
    # It kills its worker before its delivery is counted, every time: only RabbitMQ's
    # delivery limit on `celery` stops it, by moving it to `matchops.dead`.
    env = _on_rabbitmq(rabbitmq_url)
    task_id = unique("poison")
    kill = {"MATCHOPS_TEST_KILL": f"delivered:{task_id}"}
    # Others may be there already, or arrive meanwhile (a message of an unknown task).
    dead = _drained_dead_letters(rabbitmq_url)

    def arrived() -> bool:
        dead.extend(_drained_dead_letters(rabbitmq_url))
        return task_id in dead

    sibling = Celery("sibling", broker=rabbitmq_url, backend=get_settings().backend)
    with running_worker(
        "poison-in-celery",
        queues="celery",
        concurrency=1,
        extra_env={**env, **kill},
        entry=KILLING_WORKER,
    ):
        sibling.send_task("events.publish", task_id=task_id)
        wait_for(
            lambda: _dead_letters_gauge(env) >= 1, timeout=180, what="a message in matchops.dead"
        )
        wait_for(arrived, timeout=60, what="this message in matchops.dead")
    assert task_run(task_id) is None  # never counted: the broker alone stopped it


def test_a_backlog_on_rabbitmq_counts_as_queue_wait(database, rabbitmq_url: str):
    env = _on_rabbitmq(rabbitmq_url)
    task_ids = [str(uuid.uuid4()) for _ in range(2)]
    for task_id in task_ids:
        kwargs: dict[str, object] = {"difficulty": "Easy", "topic": unique("backlog")}
        _send_from_matchops(env, "peer.sweep", task_id, kwargs)
    # No worker consumes `sweeps` until now: the sweeps waited in RabbitMQ.
    time.sleep(2)
    with running_worker("backlog-on-rabbitmq", queues="sweeps", extra_env=env):
        wait_for(lambda: all(task_finished(t) for t in task_ids), timeout=60, what="the backlog")
    for task_id in task_ids:
        run = task_run(task_id)
        assert (run.started_at - run.due_at).total_seconds() >= 2


def test_a_worker_killed_after_its_commit_replays_the_outcome(
    database, db, rabbitmq_url: str, tmp_path: Path
):
    # RabbitMQ requeues what a dead connection left unacknowledged at once, so the
    # message comes back as soon as the whole worker, main process and pool, is gone.
    user = make_user(db)
    db.commit()
    env = _on_rabbitmq(rabbitmq_url)
    task_id = str(uuid.uuid4())
    marker = tmp_path / "killed"
    kill = {"MATCHOPS_TEST_KILL": f"committed:{task_id}", "MATCHOPS_TEST_KILL_MARKER": str(marker)}
    victim = WorkerProcess(
        "killed-after-commit", queues="interactive", extra_env={**env, **kill}, entry=KILLING_WORKER
    )
    try:
        victim.wait_ready()
        kwargs = {"user_id": user.id, "difficulty": "Medium", "topic": "trees"}
        _send_from_matchops(env, "peer.request", task_id, kwargs)
        victim.process.wait(60)
    finally:
        victim.stop()
    assert marker.exists()
    assert task_finished(task_id)
    with running_worker("after-the-kill", queues="interactive", extra_env=env):
        wait_for(lambda: task_run(task_id).deliveries == 2, timeout=60, what="the redelivery")
    run = task_run(task_id)
    assert run.state == "SUCCESS"
    assert run.result["user_id"] == user.id
    assert db.scalar(select(func.count()).where(MatchRequest.user_id == user.id)) == 1
