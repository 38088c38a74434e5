"""The RabbitMQ path: quorum queues with a delivery limit, tasks through a worker on
RabbitMQ, a message that keeps killing its worker ending as FAILURE there too, and the
event relay publishing with confirms."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import amqp.exceptions
import pytest
from celery import Celery
from kombu.connection import Connection
from kombu.entity import Queue
from sqlalchemy import select

from core.outbox import emit_events
from core.relay import EVENTS_EXCHANGE
from core.settings import get_settings
from models import OutboxEvent
from tests.support import (
    KILLING_WORKER,
    ROOT,
    running_worker,
    task_finished,
    task_run,
    wait_for,
)

pytestmark = pytest.mark.rabbitmq

QUEUE_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-delivery-limit": 20,
    "x-dead-letter-exchange": "matchops.dead",
}


def _on_rabbitmq(rabbitmq_url: str) -> dict[str, str]:
    # Results stay in Redis: only the broker moves.
    return {"BROKER_URL": rabbitmq_url, "RESULT_BACKEND": get_settings().backend}


def _send_from_matchops(env: dict[str, str], name: str, task_id: str) -> None:
    """Send as a process of this app configured for RabbitMQ would."""
    code = (
        "import sys; from workers.app import app; "
        f"app.send_task({name!r}, task_id={task_id!r}, kwargs={{}})"
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
        message = listening(connection.default_channel).get(no_ack=True)
    assert task_run(task_id).state == "SUCCESS"
    assert message is not None
    assert message.payload["data"] == {"marker": marker}
    # Marked published only after the broker confirmed it.
    published_at = db.scalar(
        select(OutboxEvent.published_at).where(OutboxEvent.data["marker"].astext == marker)
    )
    assert published_at is not None


def test_a_bare_celery_app_sends_to_matchops_on_rabbitmq(database, rabbitmq_url: str):
    # A sibling with nothing but the URLs declares the default `celery` queue its own
    # way; matchops declares it the same way, so both can use it.
    env = _on_rabbitmq(rabbitmq_url)
    with running_worker("celery-queue-on-rabbitmq", queues="celery", extra_env=env):
        sibling = Celery("sibling", broker=rabbitmq_url, backend=get_settings().backend)
        answer = sibling.send_task("maintenance.reconcile").get(timeout=60)
    assert "outbox_stuck" in answer
