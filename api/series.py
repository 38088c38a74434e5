"""The Prometheus series of `GET /metrics`, read from PostgreSQL, the broker and (for
the restarts of supervised loops) the session store at scrape time.

Nothing is counted in process memory: the API may run as several processes, and the
workers that do the work are other processes again, so every figure is read from where
the work leaves its trace. Each reader below is one series (or a few closely tied) and
one query; a new series is one more reader in `DATABASE_SERIES`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

import kombu.exceptions
from kombu.connection import Connection
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from celeryconfig import DEAD_LETTER_QUEUE, QUEUE_NAMES
from core import task_store
from core.db import session_factory
from core.errors import GaveUp
from core.settings import get_settings
from core.sql import HistogramQuery, epoch_seconds
from core.supervision import STORE_ERRORS as SUPERVISION_STORE_ERRORS
from core.supervision import restarts_in_fleet
from domain.peer.budget import count_open_matches
from domain.peer.rules import DIFFICULTY_LADDER
from domain.peer.stats import MATCHED_SIDES, WAITING_POOLS
from models.platform import OutboxEvent
from submission.backlog import IDLE, read_backlogs
from workers.app import app

logger = logging.getLogger("api")

# Pools beyond this many label sets are summed under topic="_other" (one per difficulty),
# so a service that invents topics cannot blow up the scraper's memory.
MAX_POOL_SERIES = 100
OTHER_TOPIC = "_other"
# Seconds from a peer request to its proposed match; people wait minutes, not hours.
TIME_TO_MATCH_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

SeriesReader = Callable[[Session], Iterable[Metric]]


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
            _RANKED.c.rank <= MAX_POOL_SERIES - len(DIFFICULTY_LADDER),
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
    for name, count in task_store.accepted_by_name(session.connection()):
        counter.add_metric([name], float(count))
    yield counter


def task_queue_wait(session: Session) -> Iterator[Metric]:
    """`matchops_task_queue_wait_seconds{task}`: accepted, sent, or due after a countdown →
    started (`task_runs.due_at`, core.task_store)."""
    family = HistogramMetricFamily(
        "matchops_task_queue_wait_seconds",
        "Seconds from a task being accepted or sent (or due, after a countdown) to its first "
        "start.",
        labels=["task"],
    )
    for name, values in task_store.queue_waits(session.connection()):
        buckets, seconds = task_store.TASK_WAIT_HISTOGRAM.buckets(values)
        family.add_metric([name], buckets, seconds)
    yield family


def task_outcomes(session: Session) -> Iterator[Metric]:
    """`matchops_tasks_failed_total{task,error}`, `matchops_tasks_gave_up_total{task}` and
    `matchops_task_redispatches_total{task}`.

    Every task whose recorded outcome is FAILURE counts once, whatever its deliveries;
    those that gave up after TASK_MAX_DELIVERIES count in both failure series. A
    redispatch is a publish by a dispatcher's scan of a task that had no outcome.
    Pruned rows stay counted (task_run_totals), so no series goes down.
    """
    failed = CounterMetricFamily(
        "matchops_tasks_failed",
        "Tasks that ended as FAILURE, by name and error type.",
        labels=["task", "error"],
    )
    gave_up = CounterMetricFamily(
        "matchops_tasks_gave_up",
        "Tasks that ended as FAILURE after TASK_MAX_DELIVERIES deliveries, by name.",
        labels=["task"],
    )
    redispatches = CounterMetricFamily(
        "matchops_task_redispatches",
        "Tasks published again by a dispatcher because they had no outcome, by name.",
        labels=["task"],
    )
    gave_up_by_task: dict[str, float] = {}
    redispatches_by_task: dict[str, float] = {}
    for name, error, failures, published in task_store.outcome_counts(session.connection()):
        gave_up_by_task.setdefault(name, 0.0)
        redispatches_by_task[name] = redispatches_by_task.get(name, 0.0) + float(published)
        if error == GaveUp.__name__:
            gave_up_by_task[name] = float(failures)
        if error:  # "" is the tasks that did not fail
            failed.add_metric([name, error], float(failures))
    for name, count in gave_up_by_task.items():
        gave_up.add_metric([name], count)
    for name, count in redispatches_by_task.items():
        redispatches.add_metric([name], count)
    yield failed
    yield gave_up
    yield redispatches


def dispatch_lag(session: Session) -> Iterator[Metric]:
    """`matchops_tasks_undispatched` and `matchops_task_dispatch_lag_seconds`."""
    count, lag = task_store.dispatch_lag(session.connection())
    yield GaugeMetricFamily(
        "matchops_tasks_undispatched",
        "Accepted tasks that are due and not yet handed to the broker.",
        value=float(count),
    )
    yield GaugeMetricFamily(
        "matchops_task_dispatch_lag_seconds",
        "How long the oldest due, undispatched task has been due (0 when none).",
        value=max(float(lag), 0.0),
    )


def queue_oldest_wait(session: Session) -> Iterator[Metric]:
    """`matchops_queue_oldest_wait_seconds{queue}`: how long the oldest task of each queue
    that is accepted (or due) and not started has waited, from the ledger; 0 when none.

    What admission control judges a queue by, and what shows a queue nobody consumes
    while the others run (the broker's length alone does not tell it from a busy one).
    """
    gauge = GaugeMetricFamily(
        "matchops_queue_oldest_wait_seconds",
        "Seconds the oldest accepted (or due) task of the queue that has not started has "
        "waited (0 when none).",
        labels=["queue"],
    )
    # A limit of 0 reads no window: the waiting part alone, nothing of what finished.
    backlogs = read_backlogs(session.connection(), 0.0)
    for queue in QUEUE_NAMES:
        gauge.add_metric([queue], backlogs.get(queue, IDLE).oldest_wait)
    yield gauge


DATABASE_SERIES: tuple[SeriesReader, ...] = (
    peer_pools,
    peer_time_to_match,
    peer_open_matches,
    outbox,
    tasks_accepted,
    task_queue_wait,
    queue_oldest_wait,
    task_outcomes,
    dispatch_lag,
)


def queue_lengths(queues: Sequence[str]) -> Iterator[Metric]:
    """`matchops_queue_length{queue}`: messages waiting in each broker queue."""
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


def thread_restarts() -> Iterator[Metric]:
    """`matchops_thread_restarts_total{thread}`: restarts of each supervised loop after an
    unexpected error, over every process (core.supervision); left out while the session
    store does not answer, rather than failing the whole scrape."""
    try:
        restarts = restarts_in_fleet()
    except SUPERVISION_STORE_ERRORS as exc:
        logger.warning("metrics: thread restarts unread, the session store did not answer: %s", exc)
        return
    counter = CounterMetricFamily(
        "matchops_thread_restarts",
        "Restarts of a supervised background loop after an unexpected error.",
        labels=["thread"],
    )
    for thread, count in restarts.items():
        counter.add_metric([thread], float(count))
    yield counter


class MatchopsCollector(Collector):
    """Reads every series afresh on each scrape."""

    def collect(self) -> Iterable[Metric]:
        """One read-only transaction for the database series, then the broker's queues."""
        metrics: list[Metric] = []
        with session_factory().begin() as session:
            for reader in DATABASE_SERIES:
                metrics.extend(reader(session))
        metrics.extend(queue_lengths(QUEUE_NAMES))
        metrics.extend(thread_restarts())
        metrics.extend(dead_letters())
        return metrics


def metrics_registry() -> CollectorRegistry:
    """A registry holding only matchops' series (no process or GC series of the API)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MatchopsCollector())
    return registry
