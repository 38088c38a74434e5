"""Celery configuration, loaded by `app.config_from_object("celeryconfig")`.

Every value comes from the settings object; the comments say why it is set so.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kombu.entity import Exchange, Queue

from beat_schedule import BEAT_SCHEDULE
from core.settings import get_settings

_settings = get_settings()

broker_url = _settings.broker
result_backend = _settings.backend

# JSON only: tasks take ids and primitives, and nothing executable crosses the broker.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

_on_rabbitmq = urlsplit(broker_url).scheme in {"amqp", "amqps", "pyamqp"}

# On RabbitMQ, queues are durable quorum queues that drop a message to the dead-letter
# queue after a bounded number of deliveries. The task base ends a task as FAILURE
# after TASK_MAX_DELIVERIES (kept below this), so the broker's limit only catches
# deliveries that died before they could be counted. It is fixed, not derived from the
# setting: a queue's arguments cannot change once declared. Redis ignores them.
RABBITMQ_DELIVERY_LIMIT = 20
DEAD_LETTERS = Exchange("matchops.dead", type="fanout", durable=True)
_queue_arguments: dict[str, Any] = (
    {
        "x-queue-type": "quorum",
        "x-delivery-limit": RABBITMQ_DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD_LETTERS.name,
    }
    if _on_rabbitmq
    else {}
)


def _queue(name: str) -> Queue:
    return Queue(name, durable=True, queue_arguments=_queue_arguments)


# Declared up front; a task routed to a queue that does not exist fails loudly.
task_queues = (
    _queue("interactive"),  # user-facing requests: a person is waiting on the answer
    _queue("sweeps"),  # periodic pairing, expiry and assignment over whole pools
    _queue("cascades"),  # unmatch and membership cascades touching many rows
    _queue("maintenance"),  # rebuilds, backfills and repairs
    _queue("events"),  # the outbox relay
    # Where a sibling's own Celery app sends by default (`send_task` without routes).
    # Declared exactly as such an app declares it (durable, classic, on its own direct
    # exchange), or RabbitMQ would refuse the sibling's declaration as inequivalent.
    Queue("celery", Exchange("celery"), routing_key="celery", durable=True),
)
# Where messages past the delivery limit go, for an operator to inspect. Declared by
# each worker at start-up (workers.signals), not among the task queues, so no worker
# ever consumes it.
DEAD_LETTER_QUEUE = Queue("matchops.dead", DEAD_LETTERS, durable=True) if _on_rabbitmq else None
task_default_queue = "interactive"
task_create_missing_queues = False
# Consulted in order: exact names before their prefix.
task_routes = (
    [
        ("peer.sweep", {"queue": "sweeps"}),
        ("peer.expire", {"queue": "sweeps"}),
        ("mentorship.assign", {"queue": "sweeps"}),
        ("mentorship.expire", {"queue": "sweeps"}),
        ("mentorship.unmatch", {"queue": "cascades"}),
        ("*.rebuild_stats", {"queue": "maintenance"}),
        ("mentorship.backfill", {"queue": "maintenance"}),
        ("carpool.*", {"queue": "cascades"}),
        ("maintenance.*", {"queue": "maintenance"}),
        ("events.*", {"queue": "events"}),
        ("peer.*", {"queue": "interactive"}),
        ("mentorship.*", {"queue": "interactive"}),
    ],
)

# One message at a time per process: with acks_late, a prefetched message would sit
# unacknowledged behind a long task and be redelivered elsewhere only after a crash.
worker_prefetch_multiplier = 1
# Redis redelivers an unacknowledged message after this. No countdown waits in the
# broker (they wait in PostgreSQL), so it only has to outlast the longest task. On
# RabbitMQ every publish waits for the broker's confirm: a task or event counts as
# handed over only once the broker has it.
broker_transport_options: dict[str, Any] = {
    "visibility_timeout": _settings.broker_visibility_timeout,
    **({"confirm_publish": True} if _on_rabbitmq else {}),
}
result_backend_transport_options = {"visibility_timeout": _settings.broker_visibility_timeout}
broker_connection_retry_on_startup = True

# A stuck task is interrupted (soft: it can roll back) and then killed (hard).
task_soft_time_limit = _settings.task_soft_time_limit
task_time_limit = _settings.task_time_limit

# The API reads states from PostgreSQL (task_runs); Flower sees STARTED in the task
# events. The stored name/args let `send_task` callers and Flower show what ran.
task_track_started = False
result_extended = True
result_expires = 3 * 24 * 3600
worker_send_task_events = True
# Celery's consumer, sending those events in batches (workers.consumer).
worker_consumer = "workers.consumer:Consumer"
# No `task-sent` event per publish: the ledger records every accepted task, and the
# event would double the broker writes of every enqueue.
task_send_sent_event = False

timezone = "UTC"
enable_utc = True
beat_schedule = BEAT_SCHEDULE
