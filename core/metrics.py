"""The Prometheus series of `GET /metrics`, read from PostgreSQL and the broker at scrape time.

Nothing is counted in process memory: the API may run as several processes, and the
workers that do the work are other processes again, so every figure is read from where
the work leaves its trace. Each reader below is one series (or a closely tied pair) and
one query; a new series is one more reader in `DATABASE_SERIES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import kombu.exceptions
from kombu.connection import Connection
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import ColumnElement, bindparam, case, func, or_, select
from sqlalchemy.orm import Session

from celeryconfig import DEAD_LETTER_QUEUE, QUEUE_NAMES
from core.db import session_factory
from core.settings import get_settings
from core.sql import epoch_seconds
from domain.peer.budget import count_open_matches
from domain.peer.stats import MATCHED_SIDES, WAITING_POOLS
from models.platform import OutboxEvent, TaskRun

# Pools beyond this many label sets are summed under topic="_other" (one per difficulty),
# so a service that invents topics cannot blow up the scraper's memory.
MAX_POOL_SERIES = 100
DIFFICULTIES = ("Easy", "Medium", "Hard")
OTHER_TOPIC = "_other"
# Seconds from a peer request to its proposed match; people wait minutes, not hours.
TIME_TO_MATCH_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# Seconds a task waits for a worker: well under a second when workers keep up.
TASK_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0)

SeriesReader = Callable[[Session], Iterable[Metric]]


class HistogramQuery:
    """The columns that count a `wait` expression into cumulative buckets, and the buckets
    back.

    `columns` are the bucket counts, the count and the sum of `wait`, in that order;
    `buckets` turns those values of one result row into what `HistogramMetricFamily` takes.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)

    def columns(self, wait: ColumnElement[Any]) -> list[ColumnElement[Any]]:
        """The aggregates over `wait` that `buckets` reads back."""
        counts = [
            func.count().filter(wait <= bindparam(f"bucket_{index}", bound))
            for index, bound in enumerate(self.bounds)
        ]
        return [*counts, func.count(), func.coalesce(func.sum(wait), 0)]

    def buckets(self, values: Sequence[Any]) -> tuple[list[tuple[str, float]], float]:
        """(buckets with +Inf, sum) from the values `columns` produced."""
        *cumulative, total, seconds = values
        buckets = [(f"{b:g}", float(n)) for b, n in zip(self.bounds, cumulative, strict=True)]
        return [*buckets, ("+Inf", float(total))], float(seconds)


_POOLS = WAITING_POOLS.c
_RANKED = select(
    _POOLS.difficulty,
    _POOLS.topic,
    _POOLS.waiting,
    _POOLS.oldest,
    func.row_number()
    .over(order_by=(_POOLS.waiting.desc(), _POOLS.difficulty, _POOLS.topic))
    .label("rank"),
    func.count().over().label("pools"),
).cte("ranked")
# The biggest pools keep their own labels; when there are more pools than fit, room is
# left for one "_other" set per difficulty, so the total never passes the limit.
_POOL_LABEL = case(
    (
        or_(
            _RANKED.c.pools <= MAX_POOL_SERIES,
            _RANKED.c.rank <= MAX_POOL_SERIES - len(DIFFICULTIES),
        ),
        _RANKED.c.topic,
    ),
    else_=OTHER_TOPIC,
).label("label")
PEER_POOLS = (
    select(
        _RANKED.c.difficulty,
        _POOL_LABEL,
        func.sum(_RANKED.c.waiting),
        epoch_seconds(func.now() - func.min(_RANKED.c.oldest)),
    )
    .group_by(_RANKED.c.difficulty, _POOL_LABEL)
    .order_by(_RANKED.c.difficulty, _POOL_LABEL)
)

_MATCH_HISTOGRAM = HistogramQuery(TIME_TO_MATCH_BUCKETS)
PEER_TIME_TO_MATCH = select(
    *_MATCH_HISTOGRAM.columns(func.greatest(MATCHED_SIDES.c.seconds, 0))
).select_from(MATCHED_SIDES)

OUTBOX_LAG = select(
    func.count(),
    func.coalesce(epoch_seconds(func.now() - func.min(OutboxEvent.occurred_at)), 0),
).where(OutboxEvent.published_at.is_(None))

TASKS_ACCEPTED = (
    select(TaskRun.name, func.count()).where(TaskRun.origin == "api").group_by(TaskRun.name)
)

_WAIT_HISTOGRAM = HistogramQuery(TASK_WAIT_BUCKETS)
TASK_QUEUE_WAIT = (
    select(
        TaskRun.name,
        *_WAIT_HISTOGRAM.columns(
            func.greatest(epoch_seconds(TaskRun.started_at - TaskRun.due_at), 0)
        ),
    )
    .where(TaskRun.started_at.is_not(None))
    .group_by(TaskRun.name)
)


def peer_pools(session: Session) -> Iterator[Metric]:
    """`matchops_peer_waiting_requests` and `matchops_peer_oldest_wait_seconds` per pool."""
    rows = session.connection().execute(PEER_POOLS).all()
    labels = ["difficulty", "topic"]
    waiting = GaugeMetricFamily(
        "matchops_peer_waiting_requests", "Pending peer requests per pool.", labels=labels
    )
    oldest = GaugeMetricFamily(
        "matchops_peer_oldest_wait_seconds",
        "Age of the oldest pending peer request per pool.",
        labels=labels,
    )
    for difficulty, topic, count, age in rows:
        waiting.add_metric([difficulty, topic], float(count))
        oldest.add_metric([difficulty, topic], max(float(age), 0.0))
    yield waiting
    yield oldest


def peer_time_to_match(session: Session) -> Iterator[Metric]:
    """`matchops_peer_time_to_match_seconds`: request created → match proposed.

    Every side of every proposed match counts, also after a decline or an expiry requeued
    the request, so the histogram's counts never go down between scrapes.
    """
    row = session.connection().execute(PEER_TIME_TO_MATCH).one()
    buckets, seconds = _MATCH_HISTOGRAM.buckets(row)
    yield HistogramMetricFamily(
        "matchops_peer_time_to_match_seconds",
        "Seconds from a peer request to the match proposed for it.",
        buckets=buckets,
        sum_value=seconds,
    )


def peer_open_matches(session: Session) -> Iterator[Metric]:
    """`matchops_peer_open_matches` against `matchops_peer_open_matches_cap`."""
    open_matches = count_open_matches(session)
    yield GaugeMetricFamily(
        "matchops_peer_open_matches",
        "Peer matches awaiting confirmation.",
        value=float(open_matches),
    )
    yield GaugeMetricFamily(
        "matchops_peer_open_matches_cap",
        "MAX_CONCURRENT_MATCHES: no sweep proposes matches beyond it.",
        value=float(get_settings().max_concurrent_matches),
    )


def outbox(session: Session) -> Iterator[Metric]:
    """`matchops_outbox_unpublished` and `matchops_outbox_lag_seconds`."""
    count, lag = session.connection().execute(OUTBOX_LAG).one()
    yield GaugeMetricFamily(
        "matchops_outbox_unpublished", "Events not yet relayed.", value=float(count)
    )
    yield GaugeMetricFamily(
        "matchops_outbox_lag_seconds",
        "Age of the oldest event not yet relayed (0 when none).",
        value=max(float(lag), 0.0),
    )


def tasks_accepted(session: Session) -> Iterator[Metric]:
    """`matchops_tasks_accepted_total{task}`: tasks the API (or `matchops enqueue`) accepted.

    Counted from task_runs, so it drops when `maintenance.reconcile` prunes finished rows
    (Prometheus reads that as a counter reset).
    """
    counter = CounterMetricFamily(
        "matchops_tasks_accepted", "Tasks accepted by the API, by name.", labels=["task"]
    )
    for name, count in session.connection().execute(TASKS_ACCEPTED):
        counter.add_metric([name], float(count))
    yield counter


def task_queue_wait(session: Session) -> Iterator[Metric]:
    """`matchops_task_queue_wait_seconds{task}`: accepted, sent, or due after a countdown →
    started (`task_runs.due_at`, workers.ledger)."""
    family = HistogramMetricFamily(
        "matchops_task_queue_wait_seconds",
        "Seconds from a task being accepted or sent (or due, after a countdown) to its first "
        "start.",
        labels=["task"],
    )
    for name, *values in session.connection().execute(TASK_QUEUE_WAIT):
        buckets, seconds = _WAIT_HISTOGRAM.buckets(values)
        family.add_metric([name], buckets, seconds)
    yield family


DATABASE_SERIES: tuple[SeriesReader, ...] = (
    peer_pools,
    peer_time_to_match,
    peer_open_matches,
    outbox,
    tasks_accepted,
    task_queue_wait,
)


def queue_lengths(queues: Sequence[str]) -> Iterator[Metric]:
    """`matchops_queue_length{queue}`: messages waiting in each broker queue."""
    from workers.app import app

    gauge = GaugeMetricFamily(
        "matchops_queue_length", "Messages waiting per broker queue.", labels=["queue"]
    )
    with app.connection_for_read() as connection:
        try:
            for queue in queues:
                gauge.add_metric([queue], float(_waiting(connection, queue)))
        except connection.connection_errors as exc:
            raise kombu.exceptions.OperationalError(str(exc)) from exc
    yield gauge


def dead_letters() -> Iterator[Metric]:
    """`matchops_dead_letters`: messages RabbitMQ dropped past a queue's delivery limit
    (or rejected) and holds in `matchops.dead` for an operator; 0 on Redis."""
    from workers.app import app

    gauge = GaugeMetricFamily(
        "matchops_dead_letters",
        "Messages waiting in the dead-letter queue matchops.dead.",
    )
    with app.connection_for_read() as connection:
        try:
            gauge.add_metric([], float(_waiting(connection, DEAD_LETTER_QUEUE.name)))
        except connection.connection_errors as exc:
            raise kombu.exceptions.OperationalError(str(exc)) from exc
    yield gauge


def _waiting(connection: Connection, queue: str) -> int:
    # A passive declare counts without creating; a queue nobody declared yet holds nothing.
    # Each check gets its own channel: a refused passive declare closes AMQP channels.
    with connection.channel() as channel:
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except connection.channel_errors:
            return 0


class MatchopsCollector(Collector):
    """Reads every series afresh on each scrape."""

    def collect(self) -> Iterable[Metric]:
        """One read-only transaction for the database series, then the broker's queues."""
        metrics: list[Metric] = []
        with session_factory().begin() as session:
            for reader in DATABASE_SERIES:
                metrics.extend(reader(session))
        metrics.extend(queue_lengths(QUEUE_NAMES))
        metrics.extend(dead_letters())
        return metrics


def metrics_registry() -> CollectorRegistry:
    """A registry holding only matchops' series (no process or GC series of the API)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MatchopsCollector())
    return registry
