"""The outbox relay: `relay_pending` publishing a backlog of events to `matching.events`
with consumers' queues bound, against kombu publishing the same bodies with no outbox.

Yardsticks, in the same run and to the same bound queues: kombu's publish batch (the
framework's floor: what the relay's broker side costs at best) and one publish per
event (how the relay published before it batched).

Then the relay a commit runs itself (`relay_now`), one event each time, as after a
confirmation: the relaying process's CPU per relay and its statements, against kombu
publishing the same one event over a pooled connection (the floor of that relay).

`python -m bench.relay [--events 20000] [--queues 1 3] [--after-commit 2000]` (scratch
database `matchops_bench_relay` on DATABASE_URL's server). Goal: the backlog's relay
within 2x kombu's batch. The relay after a commit has no goal of its own: its figures
are compared from one version of the code to the next.
"""

from __future__ import annotations

import argparse
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue

from bench.harness import bound_to_events, count_statements, report, timed, use_bench_database
from core.db import get_bookkeeping_engine, session_factory
from core.followups import take_followups
from core.outbox import emit_events
from core.relay import EVENTS_EXCHANGE, relay_pending
from workers.app import app
from workers.triggers import relay_now

# Events written per statement while the backlog is built.
WRITE_CHUNK = 5_000


def write_backlog(events: int) -> None:
    """`events` unpublished `match.proposed` rows, no relay triggered."""
    for first in range(0, events, WRITE_CHUNK):
        with session_factory().begin() as session:
            count = min(WRITE_CHUNK, events - first)
            emit_events(
                session,
                "match.proposed",
                [{"match_id": str(uuid.uuid4()), "users": [first + n, -1]} for n in range(count)],
            )
            take_followups(session)


def bodies(events: int) -> list[dict[str, Any]]:
    """Event bodies shaped as the relay's."""
    now = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": str(uuid.uuid4()),
            "type": "match.proposed",
            "occurred_at": now,
            "data": {"match_id": str(uuid.uuid4()), "users": [n, -1]},
        }
        for n in range(events)
    ]


def publish_all(connection: Connection, messages: list[dict[str, Any]], batch: bool) -> None:
    """Publish `messages` to `matching.events`, in one kombu batch or one by one."""
    producer = connection.Producer(serializer="json")
    with ExitStack() as stack:
        if batch:
            stack.enter_context(producer.batch(max_size=len(messages)))
        for message in messages:
            producer.publish(
                message,
                exchange=EVENTS_EXCHANGE,
                routing_key=message["type"],
                declare=[EVENTS_EXCHANGE],
                delivery_mode=2,
            )


def queued(connection: Connection, queues: list[Queue]) -> int:
    """Messages waiting in `queues`, which are then emptied."""
    total = 0
    for queue in queues:
        bound = queue(connection.default_channel)
        total += bound.queue_declare(passive=True).message_count
        bound.purge()
    return total


def measure(events: int, queue_count: int) -> None:
    """One relay of `events` and both yardsticks, with `queue_count` queues bound."""
    with app.connection_for_write() as connection, ExitStack() as bindings:
        queues = [
            bindings.enter_context(
                bound_to_events(connection, f"bench-relay-{uuid.uuid4().hex[:8]}")
            )
            for _ in range(queue_count)
        ]
        write_backlog(events)
        with count_statements(get_bookkeeping_engine()) as statements, timed() as relay:
            published = relay_pending(app.connection_for_write)
        relayed = queued(connection, queues)
        messages = bodies(events)
        with timed() as floor:
            publish_all(connection, messages, batch=True)
        floor_count = queued(connection, queues)
        with timed() as one_by_one:
            publish_all(connection, messages, batch=False)
        single_count = queued(connection, queues)
    report(
        f"relay of {events:,} events, {queue_count} queue(s) bound",
        [
            (
                "events.publish (relay_pending)",
                f"{relay.seconds:.2f} s, {published / relay.seconds:,.0f} events/s, "
                f"{statements.value} statements, {relayed:,} messages queued",
            ),
            (
                "kombu batch, no outbox (floor)",
                f"{floor.seconds:.2f} s, {events / floor.seconds:,.0f} events/s, "
                f"{floor_count:,} messages queued",
            ),
            (
                "kombu one publish per event",
                f"{one_by_one.seconds:.2f} s, {events / one_by_one.seconds:,.0f} events/s, "
                f"{single_count:,} messages queued",
            ),
            ("relay against the floor", f"{relay.seconds / floor.seconds:.2f}x (goal <= 2x)"),
            ("one by one against the relay", f"{one_by_one.seconds / relay.seconds:.2f}x slower"),
        ],
    )


def measure_after_commit(relays: int) -> None:
    """`relays` relays of one event each, as the commit that wrote it runs them, against
    kombu publishing one event over a pooled connection: CPU of this process per relay
    (the database's is not in it), and the relay's statements."""
    with (
        app.connection_for_write() as connection,
        bound_to_events(connection, f"bench-relay-{uuid.uuid4().hex[:8]}") as queue,
    ):
        relay_cpu = 0.0
        with count_statements(get_bookkeeping_engine()) as statements:
            for _ in range(relays):
                write_backlog(1)
                started = time.process_time()
                relay_now()
                relay_cpu += time.process_time() - started
        relayed = queued(connection, [queue])
        publish_cpu = 0.0
        for message in bodies(relays):
            started = time.process_time()
            with app.pool.acquire(block=True, timeout=2) as pooled:
                publish_all(pooled, [message], batch=False)
            publish_cpu += time.process_time() - started
        published = queued(connection, [queue])
    report(
        f"relay after a commit, one event each, {relays:,} times",
        [
            (
                "relay_now",
                f"{relay_cpu * 1e6 / relays:,.0f} us of CPU per relay, "
                f"{statements.value / relays:.2f} statements besides BEGIN and COMMIT, "
                f"{relayed:,} messages queued",
            ),
            (
                "kombu, one pooled publish (floor)",
                f"{publish_cpu * 1e6 / relays:,.0f} us of CPU per publish, "
                f"{published:,} messages queued",
            ),
            ("relay against the floor", f"{relay_cpu / publish_cpu:.2f}x"),
        ],
    )


def main() -> None:
    """Relay a backlog with one and with several consumers' queues bound, then one event
    at a time as after a commit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events in the backlog")
    parser.add_argument(
        "--queues", type=int, nargs="+", default=[1, 3], help="bound queues, one run each"
    )
    parser.add_argument(
        "--after-commit", type=int, default=2_000, help="relays of one event, as after a commit"
    )
    options = parser.parse_args()
    use_bench_database("matchops_bench_relay")
    for queue_count in options.queues:
        measure(options.events, queue_count)
    measure_after_commit(options.after_commit)


if __name__ == "__main__":
    main()
