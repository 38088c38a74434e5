"""Celery configuration, loaded by `app.config_from_object("celeryconfig")`.

Every value comes from the settings object; the comments say why it is set so.
"""

from __future__ import annotations

from kombu.entity import Queue

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

# Declared up front; a task routed to a queue that does not exist fails loudly.
task_queues = (
    Queue("interactive"),  # user-facing requests: a person is waiting on the answer
    Queue("sweeps"),  # periodic pairing, expiry and assignment over whole pools
    Queue("cascades"),  # unmatch and membership cascades touching many rows
    Queue("maintenance"),  # rebuilds, backfills and repairs
    Queue("events"),  # the outbox relay
    # Where a sibling's own Celery app sends by default (`send_task` without routes).
    Queue("celery"),
)
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
# Redis redelivers an unacknowledged message after this; countdowns stay below it.
broker_transport_options = {"visibility_timeout": _settings.visibility_timeout}
result_backend_transport_options = {"visibility_timeout": _settings.visibility_timeout}
broker_connection_retry_on_startup = True

# A stuck task is interrupted (soft: it can roll back) and then killed (hard).
task_soft_time_limit = _settings.task_soft_time_limit
task_time_limit = _settings.task_time_limit

# STARTED and the stored name/args let the API and Flower show what runs.
task_track_started = True
result_extended = True
result_expires = 3 * 24 * 3600
worker_send_task_events = True
task_send_sent_event = True

timezone = "UTC"
enable_utc = True
beat_schedule = BEAT_SCHEDULE
