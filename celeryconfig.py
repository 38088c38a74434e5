"""Celery configuration, built from a settings object when the app is first configured
(`workers.app`), so importing the app reads no environment.

Every value comes from the settings object; the comments say why it is set so.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kombu.entity import Exchange, Queue

from core.queue_order import ANSWERS_FIRST
from core.redis_options import (
    REDIS_CLIENT_OPTIONS,
    REDIS_CONNECT_TIMEOUT,
    REDIS_HEALTH_CHECK_SECONDS,
    REDIS_SOCKET_TIMEOUT,
)
from core.redis_transport import TRANSPORT as REDIS_TRANSPORT
from core.result_backend import BACKEND as REDIS_BACKEND
from core.settings import Settings
from workers.specs import DEFAULT_QUEUE, beat_schedule, task_routes

# On RabbitMQ, queues are durable quorum queues that drop a message to the dead-letter
# queue after a bounded number of deliveries. The task base ends a task as FAILURE
# after TASK_MAX_DELIVERIES (kept below this), so the broker's limit only catches
# deliveries that died before they could be counted. It is fixed, not derived from the
# setting: a queue's arguments cannot change once declared. Redis ignores them.
RABBITMQ_DELIVERY_LIMIT = 20
DEAD_LETTERS = Exchange("matchops.dead", type="fanout", durable=True)
# Where messages past the delivery limit go, for an operator to inspect. Declared on
# RabbitMQ by each worker at start-up (workers.signals), not among the task queues, so
# no worker ever consumes it.
DEAD_LETTER_QUEUE = Queue("matchops.dead", DEAD_LETTERS, durable=True)

# The queues of matchops' own tasks.
MATCHOPS_QUEUES = (
    "interactive",  # user-facing requests: a person is waiting on the answer
    # A person's answer to work under way (a proposed match, a mentoring request): its own
    # queue, so admission control judges it by its own wait, and a flood of new requests
    # neither holds it back nor gets it refused (on Redis, workers take it first:
    # core.queue_order).
    "answers",
    "sweeps",  # periodic pairing, expiry and assignment over whole pools
    "cascades",  # unmatch and membership cascades touching many rows
    "maintenance",  # rebuilds, backfills and repairs
    "events",  # the outbox relay
)
# Where a sibling's own Celery app sends by default (`send_task` without routes).
SIBLING_QUEUE = "celery"
# On RabbitMQ, `celery` gets the delivery limit and dead-letter target of the other
# queues from a policy the operator sets (docs/operations.md, RabbitMQ vhost): a policy
# takes no part in the equivalence check of a redeclaration, as queue arguments do, so a
# sibling's app, declaring the queue with no arguments, is not refused.
SIBLING_QUEUE_POLICY = {
    "delivery-limit": RABBITMQ_DELIVERY_LIMIT,
    "dead-letter-exchange": DEAD_LETTERS.name,
}
# Every queue a worker consumes by default and the metrics report.
QUEUE_NAMES = (*MATCHOPS_QUEUES, SIBLING_QUEUE)


def on_rabbitmq(broker_url: str) -> bool:
    """Whether `broker_url` names a RabbitMQ (AMQP) broker."""
    return urlsplit(broker_url).scheme in {"amqp", "amqps", "pyamqp"}


def on_redis(url: str) -> bool:
    """Whether `url` names Redis by a plain `redis://` or `rediss://` URL (a
    `redis+socket://` URL names kombu's transport itself, which an explicit
    `broker_transport` does not override)."""
    return urlsplit(url).scheme in {"redis", "rediss"}


def task_queues(rabbitmq: bool) -> tuple[Queue, ...]:
    """Every queue, declared as workers and producers on that kind of broker declare it."""
    quorum: dict[str, Any] = {"x-queue-type": "quorum"} if rabbitmq else {}
    arguments: dict[str, Any] = (
        {
            **quorum,
            "x-delivery-limit": RABBITMQ_DELIVERY_LIMIT,
            "x-dead-letter-exchange": DEAD_LETTERS.name,
        }
        if rabbitmq
        else {}
    )
    return (
        *(Queue(name, durable=True, queue_arguments=arguments) for name in MATCHOPS_QUEUES),
        # Declared as a sibling's app declares it (durable, on its own direct exchange),
        # and quorum: on a vhost whose default queue type is quorum, the sibling's
        # declaration without a type is equivalent to this one (docs/operations.md, RabbitMQ vhost).
        Queue(
            SIBLING_QUEUE,
            Exchange(SIBLING_QUEUE),
            routing_key=SIBLING_QUEUE,
            durable=True,
            queue_arguments=quorum,
        ),
    )


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration of matchops under `settings`."""
    rabbitmq = on_rabbitmq(settings.broker)
    return {
        "broker_url": settings.broker,
        # kombu's Redis transport, without a new client per command (core.redis_transport).
        "broker_transport": REDIS_TRANSPORT if on_redis(settings.broker) else None,
        # Celery's Redis result backend, without a read before each success
        # (core.result_backend).
        "result_backend": f"{REDIS_BACKEND}+{settings.backend}"
        if on_redis(settings.backend)
        else settings.backend,
        # JSON only: tasks take ids and primitives, and nothing executable crosses the
        # broker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Declared up front; a task routed to a queue that does not exist fails loudly.
        "task_queues": task_queues(rabbitmq),
        "task_default_queue": DEFAULT_QUEUE,
        "task_create_missing_queues": False,
        # Each task to the queue its declaration names (workers.specs).
        "task_routes": (task_routes(),),
        # One message at a time per process: with acks_late, a prefetched message would
        # sit unacknowledged behind a long task and be redelivered elsewhere only after a
        # crash.
        "worker_prefetch_multiplier": 1,
        # Redis redelivers an unacknowledged message after this. No countdown waits in
        # the broker (they wait in PostgreSQL), so it only has to outlast the longest
        # task. On RabbitMQ every publish waits for the broker's confirm: a task or event
        # counts as handed over only once the broker has it.
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout,
            **(
                {"confirm_publish": True}
                if rabbitmq
                # A worker takes `answers` before its other queues (core.queue_order).
                else {**REDIS_CLIENT_OPTIONS, "queue_order_strategy": ANSWERS_FIRST}
            ),
        },
        "result_backend_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout
        },
        # Redis connections give up on a Redis that stopped answering (core.redis_options).
        "redis_socket_timeout": REDIS_SOCKET_TIMEOUT,
        "redis_socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
        "redis_socket_keepalive": True,
        "redis_backend_health_check_interval": REDIS_HEALTH_CHECK_SECONDS,
        "broker_connection_retry_on_startup": True,
        # A stuck task is interrupted (soft: it can roll back) and then killed (hard).
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        # A task killed at the hard limit is acknowledged, not delivered again (it would
        # most likely be killed again); the task base records it as FAILURE
        # (TimeLimitExceeded), which every later delivery of its id replays.
        "task_acks_on_timeout": True,
        # The API reads states from PostgreSQL (task_runs); Flower sees STARTED in the
        # task events. The stored name/args let `send_task` callers and Flower show what
        # ran.
        "task_track_started": False,
        "result_extended": True,
        "result_expires": 3 * 24 * 3600,
        "worker_send_task_events": True,
        # Celery's consumer, sending those events in batches (workers.consumer).
        "worker_consumer": "workers.consumer:Consumer",
        # No `task-sent` event per publish: the ledger records every accepted task, and
        # the event would double the broker writes of every enqueue.
        "task_send_sent_event": False,
        "timezone": "UTC",
        "enable_utc": True,
        # The ticks the tasks declare (workers.specs; beat_schedule.py shows them).
        "beat_schedule": beat_schedule(),
        # Skips a safety tick when nothing waits for it (workers/beat.py): an idle fleet
        # runs almost nothing.
        "beat_scheduler": "workers.beat:QuietScheduler",
    }
