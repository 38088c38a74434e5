"""Time to match through the HTTP API: a stack (API, one worker with two processes,
beat) driven at a steady rate by fresh users spread over the pools, with a consumer
bound to `matching.events`.

Prints p50/p95/p99 of (a) the second request of a pair accepted (202) -> its
`match.proposed` consumed and (b) the second `peer.confirm` accepted -> `match.found`
consumed, the rate the API accepted and the CPU each part of the stack spent per request,
then the same run with commit triggers off (beat's safety tick alone) and the ratio;
last, in rounds, the rate at which a two-process worker drains a queue of waiting
`peer.request` tasks, and of tasks with an empty body through the same task base (its
floor, `bench._floor`), against a bare Celery no-op task on the same pool, and against
the same no-op with what Celery does for every task in a matchops worker (task events,
its INFO log without the per-task lines).

`python -m bench.time_to_match [--rate 200] [--seconds 60] [--pools 50]` (scratch
database `matchops_bench_ttm` on DATABASE_URL's server, or `--database`). The bench
confirms each proposal the moment it arrives, both sides at once; with `--think S` each
confirmation waits a random 0 to S seconds first, as people do, so a batch of proposals
does not come back as one burst of confirmations.

With `--rates 40,80,120,200` it sweeps the offered rate instead, a fresh stack with
commit triggers per rate, admission control on (`MAX_QUEUE_WAIT_SECONDS`, from
`--max-queue-wait`) from `--admission-from` requests/s on, and prints for each rate
the latencies (a) and (b), the rate accepted, the 429s and how fast they were
answered, every accepted pair matched or not, how many pairs had both confirmations
admitted and reached a session (a bench client does not retry a refused one), the
triggered sweeps and relays and the dispatchers' claims per request (from the ledger)
and the CPU per request by part; then the drain rounds (unless `--skip-drain`), with
the CPU each drained task cost by part; last, what Celery and the HTTP server alone
cost per request at each rate: the Celery tasks the stack ran per request (from the
ledger) at the CPU of the no-op as matchops runs it, and the HTTP calls per request at
the CPU of one `/healthz` call on the same API.

Goals (the sweep, on this machine's two cores): p99 (a) < 300 ms and at most 12 ms of
the stack's CPU per request at 80 requests/s; at 200 requests/s with
`MAX_QUEUE_WAIT_SECONDS=2`, at least 80 requests/s matched, every accepted request
matched, p99 (a) of the accepted < 3 s, the rest answered 429 within milliseconds. The
drain: the task base's floor at least 0.6x the bare no-op, `peer.request` at least 0.8x
the floor.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from http.client import HTTPException
from typing import Any

import httpx
from celery import Celery
from celery.result import AsyncResult
from kombu.connection import Connection
from kombu.message import Message
from kombu.transport import redis as kombu_redis
from sqlalchemy import text

from api.auth import issue_token
from bench import _floor, _noop
from bench.answers import Answers
from bench.cpu import BENCH, POSTGRES, REDIS, CpuReading, cpu_rows, read_cpu
from bench.harness import (
    BENCH_LOGS,
    autocommit_connection,
    bound_to_events,
    node_name,
    processes,
    report,
    use_bench_database,
    wait_for_api,
    wait_for_workers,
    worker_argv,
)
from bench.poster import JsonPoster
from core import task_store
from core.settings import get_settings
from runtime.children import Child
from runtime.embedded import free_port
from runtime.polling import poll_until
from runtime.stack import StackError, wait_for_worker
from workers.app import app

DIFFICULTIES = ("Easy", "Medium", "Hard")
# Concurrent HTTP calls: enough for the offered rate at a few hundred ms per call.
HTTP_THREADS = 32
# After the last request, how long events may still arrive (beat alone needs a tick).
DRAIN_SECONDS = 25.0
# Tasks per drain-rate measurement, and measurements (alternating with the no-op's).
DRAIN_TASKS = 2_000
DRAIN_ROUNDS = 3
# `/healthz` calls that price one HTTP call on a phase's API, before the phase.
PROBE_CALLS = 500
# The part a drain measures, as `read_cpu` names it.
DRAINED = "worker"


def pool_of(user: int, first_user: int, pools: int) -> tuple[str, str]:
    """A phase's users (from `first_user` on) are dealt round-robin over pools of its own; a
    topic holds three pools. Requests an earlier phase's stack left unmatched when it
    stopped (a saturated one leaves many) stay pending in theirs, and would otherwise
    pair with this phase's, which then count as never matched."""
    pool = (user - first_user) % pools
    return DIFFICULTIES[pool % 3], f"topic-{first_user}-{pool // 3:02d}"


@dataclass
class Timings:
    """Clock readings (time.perf_counter) of one phase, shared by the threads.

    The latencies are worked out from the readings when asked for, not as each event
    comes: an event can reach the consumer before the thread that made the call it
    answers has read its 202 (a confirmation runs in milliseconds), and would otherwise
    go uncounted.
    """

    accepted: dict[int, float] = field(default_factory=dict)  # user -> request accepted
    confirmed: dict[str, list[float]] = field(default_factory=dict)  # match -> confirms
    # match -> its users and when its `match.proposed` was consumed
    proposed: dict[str, tuple[list[int], float]] = field(default_factory=dict)
    found: dict[str, float] = field(default_factory=dict)  # match -> `match.found` consumed
    refused: int = 0
    # Of those, `peer.request` calls: each request sent is accepted or one of these.
    requests_refused: int = 0
    # 429s (admission control) and how long each took to come back.
    overloaded: list[float] = field(default_factory=list)
    consumed: int = 0
    # HTTP calls made to the API (requests and confirmations, answered or refused).
    calls: int = 0
    # Calls that got no answer, by the error's type.
    failed: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def to_proposed(self) -> list[float]:
        """(a): the later request of each pair accepted -> its `match.proposed` consumed,
        for the pairs whose both requests were accepted."""
        with self.lock:
            return [
                _since(consumed, [self.accepted[user] for user in users])
                for users, consumed in self.proposed.values()
                if all(user in self.accepted for user in users)
            ]

    @property
    def to_found(self) -> list[float]:
        """(b): the later confirmation of each pair accepted -> its `match.found` consumed,
        for the pairs whose both confirmations were accepted."""
        with self.lock:
            return [
                _since(consumed, self.confirmed[match])
                for match, consumed in self.found.items()
                if len(self.confirmed.get(match, ())) == 2
            ]


def _since(consumed: float, accepted: list[float]) -> float:
    # The consumer can read the event a moment before the caller's thread reads the 202
    # it answers: such a wait counts as none.
    return max(0.0, consumed - max(accepted))


@contextmanager
def consuming(on_event: Callable[[dict[str, Any], float], None]) -> Iterator[None]:
    """A queue bound to `matching.events` for `match.*`, consumed in a thread."""
    stop = threading.Event()
    bound = threading.Event()

    def consume() -> None:
        with (
            Connection(get_settings().broker) as connection,
            bound_to_events(connection, f"bench-ttm-{os.getpid()}", "match.*") as queue,
        ):

            def received(body: dict[str, Any], message: Message) -> None:
                on_event(body, time.perf_counter())
                message.ack()

            with connection.Consumer(queue, callbacks=[received], accept=["json"]):
                bound.set()
                while not stop.is_set():
                    try:
                        connection.drain_events(timeout=0.2)
                    except TimeoutError:
                        continue

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    if not bound.wait(30):
        raise StackError("the event consumer did not bind to matching.events")
    try:
        yield
    finally:
        stop.set()
        consumer.join(10)


def percentiles(seconds: list[float]) -> str:
    """`p50 / p95 / p99` in milliseconds, and the count."""
    if len(seconds) < 2:
        return f"too few samples ({len(seconds)})"
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return (
        f"p50 {cuts[49] * 1000:,.0f} ms / p95 {cuts[94] * 1000:,.0f} ms / "
        f"p99 {cuts[98] * 1000:,.0f} ms ({len(seconds):,} pairs)"
    )


@dataclass
class Phase:
    """What one driven run measured."""

    timings: Timings
    accepted_rate: float
    # CPU seconds by part from the first request offered to the last event awaited,
    # and those seconds.
    cpu: dict[str, float]
    elapsed: float
    # Pairs the accepted requests make, and follow-ups commits sent, by task name.
    pairs: int = 0
    followups: dict[str, int] = field(default_factory=dict)
    # The API's tasks the dispatchers published, and in how many claims.
    published: int = 0
    claims: int = 0
    # Celery tasks the workers finished in the phase (the ledger), every kind.
    tasks: int = 0
    # The API's CPU seconds for one `/healthz` call, measured before the phase.
    probe_cpu: float = 0.0


def drive(
    options: argparse.Namespace,
    database: str,
    first_user: int,
    triggers: bool,
    rate: int | None = None,
    max_queue_wait: float | None = None,
) -> Phase:
    """Start the stack, drive it at the offered rate (`rate`, else `--rate`), with
    admission control after `max_queue_wait` seconds when given, and collect both
    latencies."""
    rate = rate or options.rate
    secret = secrets.token_hex(32)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    token = issue_token(secret, "bench", ["*"], 3600)
    headers = {"Authorization": f"Bearer {token}"}
    env = {"AUTH_SECRET": secret, "COMMIT_TRIGGERS": "true" if triggers else "false"}
    if max_queue_wait is not None:
        env["MAX_QUEUE_WAIT_SECONDS"] = f"{max_queue_wait:g}"
    label = "triggers" if triggers else "beat-only"
    total = rate * options.seconds
    timings = Timings()
    # A backlog left by an earlier phase or an interrupted run would be the first thing
    # this stack works on, and would close the door of admission control at once.
    forget_backlog()
    with (
        processes(
            env=env,
            worker=worker_argv("worker", "-c", str(options.concurrency)),
            beat=["beat", "--schedule", str(BENCH_LOGS / f"celerybeat-schedule-{label}")],
            api=["api", "--port", str(port)],
        ) as children,
        httpx.Client(base_url=api_url, headers=headers, timeout=30) as http,
        JsonPoster(api_url, headers, timeout=30) as poster,
        ThreadPoolExecutor(max_workers=HTTP_THREADS) as calls,
        closing(Answers(calls.submit, options.think, seed=first_user)) as answers,
    ):
        wait_for_workers(children, "worker")
        wait_for_api(http)

        def enqueue(name: str, args: dict[str, Any]) -> float | None:
            sent = time.perf_counter()
            try:
                status = poster.post(f"/v1/tasks/{name}", {"args": args})
            except (OSError, HTTPException) as exc:
                # Counted and shown: a call lost here would read as a pair never matched.
                with timings.lock:
                    timings.calls += 1
                    timings.failed[type(exc).__name__] += 1
                return None
            answered = time.perf_counter()
            with timings.lock:
                timings.calls += 1
                if status == 202:
                    return answered
                timings.refused += 1
                if status == 429:
                    timings.overloaded.append(answered - sent)
            return None

        def request(user: int) -> None:
            difficulty, topic = pool_of(user, first_user, options.pools)
            accepted = enqueue(
                "peer.request", {"user_id": user, "difficulty": difficulty, "topic": topic}
            )
            with timings.lock:
                if accepted is None:
                    timings.requests_refused += 1
                else:
                    timings.accepted[user] = accepted

        def confirm(match_id: str, user: int) -> None:
            accepted = enqueue(
                "peer.confirm", {"match_id": match_id, "user_id": user, "confirmed": True}
            )
            if accepted is not None:
                with timings.lock:
                    timings.confirmed.setdefault(match_id, []).append(accepted)

        def on_event(event: dict[str, Any], consumed: float) -> None:
            with timings.lock:
                timings.consumed += 1
            data = event["data"]
            users = data.get("users", [])
            if not all(first_user <= user < first_user + total for user in users):
                return  # left over from an earlier run
            with timings.lock:
                if event["type"] == "match.proposed":
                    timings.proposed[data["match_id"]] = (users, consumed)
                elif event["type"] == "match.found":
                    timings.found[data["match_id"]] = consumed
            if event["type"] == "match.proposed":
                for user in users:
                    answers.answer(confirm, data["match_id"], user)

        sessions = {f"matchops {name}": child.pid for name, child in children.items()}
        probe_cpu = http_call_cpu(http, children["api"].pid, database)
        with consuming(on_event):
            cpu_before = read_cpu(sessions, database)
            since = database_now()
            started = time.perf_counter()
            for index in range(total):
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                calls.submit(request, first_user + index)
            while len(timings.accepted) + timings.requests_refused < total:
                time.sleep(0.05)
            accepted_rate = len(timings.accepted) / (time.perf_counter() - started)
            # Every pool pairs all its accepted requests but an odd one out.
            with timings.lock:
                users = list(timings.accepted)
            per_pool = Counter(pool_of(user, first_user, options.pools) for user in users)
            pairs = sum(count // 2 for count in per_pool.values())
            poll_until(lambda: len(timings.to_found) >= pairs, DRAIN_SECONDS, 0.2)
            # No confirmation goes out while the CPU is read.
            answers.close()
            cpu = read_cpu(sessions, database).since(cpu_before)
            elapsed = time.perf_counter() - started
            followups = triggered_since(since)
            published, claims = claims_since(since)
            tasks = finished_since(since)
    return Phase(
        timings,
        accepted_rate,
        cpu,
        elapsed,
        pairs,
        followups,
        published,
        claims,
        tasks,
        probe_cpu,
    )


def http_call_cpu(http: httpx.Client, api_session: int, database: str) -> float:
    """The API's CPU seconds for one `/healthz` call: PROBE_CALLS of them, one at a
    time, read from the API's session. The route does nothing, so this is the price of
    an HTTP call to this API: the server, the framework and matchops' middleware."""
    before = read_cpu({"api": api_session}, database)
    for _ in range(PROBE_CALLS):
        http.get("/healthz").raise_for_status()
    used = read_cpu({"api": api_session}, database).since(before)
    return used.get("api", 0.0) / PROBE_CALLS


def forget_backlog() -> None:
    """Drop the messages waiting in the broker, those an earlier stack's worker had taken
    and not acknowledged, and the tasks in the ledger that never finished (of the
    scratch database)."""
    app.control.purge()
    with app.connection_for_write() as broker:
        channel = broker.default_channel
        # Redis keeps a message a stopped worker held, and hands it to the next worker
        # once its visibility timeout passes: a request of an earlier phase would then
        # pair with one of this phase's. RabbitMQ requeues them, and the purge drops them.
        if isinstance(channel, kombu_redis.Channel):
            with channel.conn_or_acquire() as client:
                client.delete(
                    channel.unacked_key, channel.unacked_index_key, channel.unacked_mutex_key
                )
    with autocommit_connection() as conn:
        conn.execute(text("DELETE FROM task_runs WHERE finished_at IS NULL"))


def finished_since(moment: datetime) -> int:
    """Tasks of every kind the workers finished since `moment` (the ledger)."""
    with autocommit_connection() as conn:
        finished: int = conn.scalar(
            text("SELECT count(*) FROM task_runs WHERE finished_at >= :moment"),
            {"moment": moment},
        )
    return finished


def database_now() -> datetime:
    """The database's clock: the ledger's times are its."""
    with autocommit_connection() as conn:
        now: datetime = conn.scalar(text("SELECT now()"))
    return now


def triggered_since(moment: datetime) -> dict[str, int]:
    """Tasks commits sent (caller `trigger`) that reached a worker since `moment`, by name."""
    with autocommit_connection() as conn:
        rows = conn.execute(
            text(
                "SELECT name, count(*) FROM task_runs "
                "WHERE caller = 'trigger' AND accepted_at >= :moment GROUP BY name"
            ),
            {"moment": moment},
        ).all()
    return {name: int(count) for name, count in rows}


def claims_since(moment: datetime) -> tuple[int, int]:
    """Tasks the API accepted since `moment` that a dispatcher published, and the claims
    that published them: one claim marks all its rows with one `dispatched_at` (the
    statement's `now()`)."""
    with autocommit_connection() as conn:
        published, claims = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT dispatched_at) FROM task_runs "
                "WHERE origin = 'api' AND accepted_at >= :moment AND dispatched_at IS NOT NULL"
            ),
            {"moment": moment},
        ).one()
    return int(published), int(claims)


@dataclass(frozen=True)
class Drained:
    """One drain: tasks per second, and CPU milliseconds per task by part (the draining
    worker with its pool, PostgreSQL's backends, Redis)."""

    rate: float
    cpu: dict[str, float]

    @property
    def cpu_total(self) -> float:
        """CPU milliseconds per task, every part."""
        return sum(self.cpu.values())


@dataclass(frozen=True)
class Drainer:
    """The worker a drain measures: its Celery node name and its session (its pid)."""

    node: str
    session: int
    database: str

    def cpu(self) -> CpuReading:
        """CPU seconds so far of the worker, PostgreSQL's backends and Redis."""
        return read_cpu({DRAINED: self.session}, self.database)

    def drained(self, before: CpuReading, rate: float) -> Drained:
        """The drain's rate, and the CPU per task each part spent since `before`."""
        used = self.cpu().since(before)
        return Drained(
            rate,
            {part: used.get(part, 0.0) * 1000 / DRAIN_TASKS for part in (DRAINED, POSTGRES, REDIS)},
        )


def drain_rate(
    capp: Celery, worker: Drainer, queue: str, send: Callable[[int], AsyncResult[Any]]
) -> Drained:
    """Tasks per second the worker takes to drain DRAIN_TASKS messages that all wait in
    `queue` before it consumes that queue: from the moment it is told to, to the last
    result's `date_done`. Nothing but the worker and the servers runs meanwhile (this
    process reads the results every 0.1 s), so no client's own work is counted against
    the task it measures, and the CPU read from the moment it is told to, to the last
    result, is the drain's."""
    node = worker.node
    capp.control.cancel_consumer(queue, destination=[node], reply=True)
    backend = capp.backend
    waiting = [backend.get_key_for_task(send(index).id) for index in range(DRAIN_TASKS)]
    finished: list[datetime] = []

    def drained() -> bool:
        nonlocal waiting
        values = backend.client.mget(waiting)
        finished.extend(
            finished_at(backend.decode_result(value)) for value in values if value is not None
        )
        waiting = [key for key, value in zip(waiting, values, strict=True) if value is None]
        return not waiting

    cpu = worker.cpu()
    started = time.time()
    capp.control.add_consumer(queue, destination=[node], reply=True)
    if not poll_until(drained, 300, 0.1):
        raise StackError(f"{len(waiting):,} of {DRAIN_TASKS:,} tasks still unfinished after 300 s")
    return worker.drained(cpu, DRAIN_TASKS / (max(finished).timestamp() - started))


def drain_accepted_rate(worker: Drainer) -> Drained:
    """Tasks per second the worker takes to drain DRAIN_TASKS `bench.floor` tasks
    accepted as the API accepts them: recorded in `task_runs`, then published by the
    dispatchers, whose first publish of a task lets its delivery count itself with its
    outcome (core.task_store, step 4d). Timed as `drain_rate` times, to the last
    `finished_at` in the ledger (such tasks store no result in the backend)."""
    node = worker.node
    app.control.cancel_consumer("interactive", destination=[node], reply=True)
    ids = [str(uuid.uuid4()) for _ in range(DRAIN_TASKS)]
    with autocommit_connection() as connection:
        for start in range(0, DRAIN_TASKS, task_store.CLAIM_BATCH):
            batch = ids[start : start + task_store.CLAIM_BATCH]
            task_store.record_tasks(
                connection,
                [
                    task_store.NewTask(
                        task_id=task_id,
                        name=_floor.NAME,
                        args={"index": start + offset},
                        caller="bench",
                        idempotency_key=None,
                        countdown=None,
                    )
                    for offset, task_id in enumerate(batch)
                ],
            )

    def count(condition: str) -> Any:
        with autocommit_connection() as connection:
            return connection.execute(
                text(
                    f"SELECT count(*) FILTER (WHERE {condition}), max(finished_at) "
                    "FROM task_runs WHERE task_id = ANY(:ids)"
                ),
                {"ids": ids},
            ).one()

    if not poll_until(lambda: count("dispatched_at IS NOT NULL")[0] == DRAIN_TASKS, 60, 0.1):
        raise StackError("the dispatchers did not publish the accepted tasks within 60 s")
    cpu = worker.cpu()
    started = time.time()
    app.control.add_consumer("interactive", destination=[node], reply=True)
    if not poll_until(lambda: count("finished_at IS NOT NULL")[0] == DRAIN_TASKS, 300, 0.1):
        raise StackError(f"accepted tasks still unfinished after 300 s (of {DRAIN_TASKS:,})")
    last: datetime = count("true")[1]
    return worker.drained(cpu, DRAIN_TASKS / (last.timestamp() - started))


def send_request(first_user: int, index: int) -> AsyncResult[Any]:
    """Send one `peer.request` of a fresh user into the drain's own pool."""
    return app.send_task(
        "peer.request",
        kwargs={"user_id": first_user + index, "difficulty": "Easy", "topic": "drain"},
    )


def finished_at(meta: dict[str, Any]) -> datetime:
    """A stored result's `date_done`, as an aware datetime."""
    done = meta["date_done"]
    when = done if isinstance(done, datetime) else datetime.fromisoformat(done)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DrainRound:
    """The drains of one round."""

    request: Drained
    floor: Drained
    accepted: Drained
    noop: Drained
    noop_as_matchops: Drained


def drain_rates(first_user: int, database: str) -> list[DrainRound]:
    """DRAIN_ROUNDS rounds after one to warm up, each draining `peer.request` and the task
    base's floor (`bench.floor`, an empty body: sent with `send_task`, and accepted as
    the API accepts it) on a worker of two processes, and the bare no-op, and the no-op
    as matchops runs its workers (task events, INFO log without per-task lines), each on
    one of its own.

    The matchops worker runs alone, without beat or triggers, so no sweep of the drained
    requests shares its processes.
    """
    bare, configured = node_name("noop"), node_name("noop-as-matchops")
    noop_workers = [
        Child(
            "noop",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench._noop:app",
                "worker",
                "-c",
                "2",
                "-n",
                bare,
            ],
            BENCH_LOGS / "noop.log",
        ),
        Child(
            "noop-as-matchops",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench._noop:as_matchops",
                "worker",
                "-c",
                "2",
                "-n",
                configured,
                "-l",
                "INFO",
            ],
            BENCH_LOGS / "noop-as-matchops.log",
        ),
    ]
    worker = node_name("worker")
    rounds = []
    with processes(
        env={"COMMIT_TRIGGERS": "false"},
        worker=worker_argv("worker", "-c", "2", "-I", "bench._floor"),
    ) as children:
        for noop_worker in noop_workers:
            noop_worker.start()
        try:
            wait_for_workers(children, "worker")
            wait_for_worker(_noop.app, noop_workers[0], bare, timeout=60)
            wait_for_worker(_noop.as_matchops, noop_workers[1], configured, timeout=60)
            ours = Drainer(worker, children["worker"].pid, database)
            bare_worker = Drainer(bare, noop_workers[0].pid, database)
            configured_worker = Drainer(configured, noop_workers[1].pid, database)
            # Round 0 is unreported: the first tasks a fresh worker runs pay for its
            # warm-up (each process's connections and prepared statements).
            for round_index in range(DRAIN_ROUNDS + 1):
                first = first_user + round_index * DRAIN_TASKS
                measured = DrainRound(
                    request=drain_rate(app, ours, "interactive", partial(send_request, first)),
                    floor=drain_rate(app, ours, "interactive", send_floor),
                    accepted=drain_accepted_rate(ours),
                    noop=drain_rate(
                        _noop.app, bare_worker, _noop.QUEUE, lambda _index: _noop.noop.delay()
                    ),
                    noop_as_matchops=drain_rate(
                        _noop.as_matchops,
                        configured_worker,
                        _noop.QUEUE_AS_MATCHOPS,
                        lambda _index: _noop.noop_as_matchops.delay(),
                    ),
                )
                if round_index:
                    rounds.append(measured)
        finally:
            for noop_worker in noop_workers:
                noop_worker.stop(30)
    return rounds


def send_floor(index: int) -> AsyncResult[Any]:
    """Send one `bench.floor` task."""
    return app.send_task(_floor.NAME, kwargs={"index": index})


def make_users(first: int, count: int) -> None:
    """`count` fresh users from id `first` on."""
    with autocommit_connection() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, email, display_name, role) "
                "SELECT g, 'ttm' || g || '@example.test', 'User ' || g, 'member' "
                "FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g"
            ),
            {"first": first, "last": first + count - 1},
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200, help="requests offered per second")
    parser.add_argument("--seconds", type=int, default=60, help="how long to offer them")
    parser.add_argument("--pools", type=int, default=50, help="pools the users are dealt over")
    parser.add_argument(
        "--rates",
        type=rates_list,
        help="sweep these offered rates (comma-separated, e.g. 40,80,120,200) instead",
    )
    parser.add_argument(
        "--max-queue-wait",
        type=float,
        default=2.0,
        help="MAX_QUEUE_WAIT_SECONDS of the sweep's stacks from --admission-from on",
    )
    parser.add_argument(
        "--admission-from",
        type=int,
        default=200,
        help="offered rate from which the sweep turns admission control on",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="pool processes of the driven stack's worker (the drain rounds keep two)",
    )
    parser.add_argument(
        "--think",
        type=think_seconds,
        default=0.0,
        help="each confirmation waits a random 0 to THINK seconds after its proposal, as "
        "people answer (default 0: at once)",
    )
    parser.add_argument("--skip-drain", action="store_true", help="no drain rounds")
    parser.add_argument(
        "--database",
        default="matchops_bench_ttm",
        help="scratch database on DATABASE_URL's server (dropped and recreated)",
    )
    return parser.parse_args()


def think_seconds(text: str) -> float:
    """`--think`'s seconds: a number, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"think time must be 0 or more seconds: {text!r}")
    return seconds


def rates_list(text: str) -> list[int]:
    """`40,80,120` as [40, 80, 120]."""
    try:
        rates = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole rates: {text!r}") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"rates must be positive: {text!r}")
    return rates


def main() -> None:
    """Drive the stack with triggers, then with beat alone, and compare (or sweep the
    rates); then the drain rounds."""
    options = parse_args()
    database = options.database
    use_bench_database(database)
    # The cap on open matches is another bench's subject; here nothing may wait on it.
    os.environ["MAX_CONCURRENT_MATCHES"] = "10000000"
    get_settings.cache_clear()
    phases = options.rates or [options.rate, options.rate]
    driven = sum(rate * options.seconds for rate in phases)
    make_users(1, driven + (DRAIN_ROUNDS + 1) * DRAIN_TASKS)
    swept: list[tuple[int, Phase]] = []
    if options.rates:
        swept = sweep_rates(options, database)
    else:
        compare_with_beat(options, database)
    if options.skip_drain:
        return
    app.control.purge()
    rounds = drain_rates(1 + driven, database)
    report_drain(rounds)
    if swept:
        report_frameworks(swept, rounds)


def compare_with_beat(options: argparse.Namespace, database: str) -> None:
    """Commit triggers against beat's safety tick alone, at `--rate`."""
    per_phase = options.rate * options.seconds
    triggered = drive(options, database, 1, triggers=True)
    report_phase(options, "commit triggers", triggered)
    beat_only = drive(options, database, 1 + per_phase, triggers=False)
    report_phase(options, "beat alone (triggers off)", beat_only)
    report(
        "triggers against beat alone",
        [
            ("(a) p99 ratio", ratio(beat_only.timings.to_proposed, triggered.timings.to_proposed)),
            ("(b) p99 ratio", ratio(beat_only.timings.to_found, triggered.timings.to_found)),
        ],
    )


def sweep_rates(options: argparse.Namespace, database: str) -> list[tuple[int, Phase]]:
    """One stack with commit triggers per offered rate, each reported as it ends; the
    phases, by offered rate."""
    swept = []
    first_user = 1
    for rate in options.rates:
        admission = options.max_queue_wait if rate >= options.admission_from else None
        phase = drive(options, database, first_user, True, rate, admission)
        first_user += rate * options.seconds
        title = f"{rate} requests/s offered" + (
            f", MAX_QUEUE_WAIT_SECONDS={admission:g}" if admission is not None else ""
        )
        report_sweep_phase(options, title, phase)
        swept.append((rate, phase))
    return swept


def report_sweep_phase(options: argparse.Namespace, title: str, phase: Phase) -> None:
    """One rate of the sweep: latencies, admission, follow-ups and CPU per request."""
    timings = phase.timings
    accepted = max(1, len(timings.accepted))
    stack_cpu = sum(seconds for part, seconds in phase.cpu.items() if part != BENCH)
    sweeps = phase.followups.get("peer.sweep", 0)
    relays = phase.followups.get("events.publish", 0)
    report(
        f"rate sweep: {title}, for {options.seconds} s over {options.pools} pools",
        [
            ("accepted by the API", f"{phase.accepted_rate:,.0f} requests/s"),
            ("429 (admission control)", f"{len(timings.overloaded):,}, {quick(timings)}"),
            ("other refusals", f"{timings.refused - len(timings.overloaded):,}"),
            ("calls with no answer", unanswered(timings)),
            ("accepted pairs matched", f"{len(timings.to_proposed):,} of {phase.pairs:,}"),
            (
                "accepted pairs confirmed",
                f"{len(timings.to_found):,} of {phase.pairs:,}: "
                f"{phase.accepted_rate * len(timings.to_found) / max(1, phase.pairs):,.0f} "
                "requests/s reached a session",
            ),
            ("(a) request -> match.proposed", percentiles(timings.to_proposed)),
            ("(b) confirm -> match.found", percentiles(timings.to_found)),
            ("triggered sweeps", f"{sweeps:,}: {sweeps / accepted:.3f} per request"),
            ("triggered relays", f"{relays:,}: {relays / accepted:.3f} per request"),
            (
                "dispatcher claims",
                f"{phase.claims:,}: {phase.claims / accepted:.3f} per request, "
                f"{phase.published / max(1, phase.claims):.2f} tasks each",
            ),
            *cpu_rows(phase.cpu, accepted, "request", phase.elapsed),
            (
                "CPU: the stack without the bench",
                f"{stack_cpu * 1000 / accepted:,.2f} ms per request",
            ),
            (
                "Celery tasks, HTTP calls",
                f"{phase.tasks / accepted:.2f} tasks and {timings.calls / accepted:.2f} calls "
                f"per request; a `/healthz` call costs the API {phase.probe_cpu * 1000:.2f} ms",
            ),
        ],
    )


def unanswered(timings: Timings) -> str:
    """The calls that got no answer, by the error's type."""
    return ", ".join(f"{count:,} {error}" for error, count in timings.failed.items()) or "0"


def quick(timings: Timings) -> str:
    """How fast the 429s came back: p50 / p99."""
    if len(timings.overloaded) < 2:
        return "too few to time"
    cuts = statistics.quantiles(timings.overloaded, n=100, method="inclusive")
    return f"answered in p50 {cuts[49] * 1000:,.0f} ms / p99 {cuts[98] * 1000:,.0f} ms"


def report_drain(rounds: list[DrainRound]) -> None:
    """The drain rounds against the bare no-op, and against the no-op as matchops runs
    its workers (what the task base itself costs); the CPU per task of each."""

    def median(part: Callable[[DrainRound], float]) -> str:
        return f"{statistics.median(part(r) for r in rounds):.2f}x"

    def cpu(label: str, drained: Callable[[DrainRound], Drained]) -> tuple[str, str]:
        def ms(part: str) -> float:
            return statistics.median(drained(r).cpu[part] for r in rounds)

        total = statistics.median(drained(r).cpu_total for r in rounds)
        return (
            f"CPU per task, {label}",
            f"{total:.2f} ms: worker {ms(DRAINED):.2f}, PostgreSQL {ms(POSTGRES):.2f}, "
            f"Redis {ms(REDIS):.2f}",
        )

    report(
        f"per-task overhead: {DRAIN_TASKS:,} waiting tasks drained by two prefork processes",
        [
            *(
                (
                    f"round {index}",
                    f"peer.request {r.request.rate:,.0f}/s, task base alone "
                    f"{r.floor.rate:,.0f}/s (accepted by the API {r.accepted.rate:,.0f}/s), "
                    f"bare Celery no-op {r.noop.rate:,.0f}/s: "
                    f"{r.request.rate / r.noop.rate:.2f}x, {r.floor.rate / r.noop.rate:.2f}x "
                    f"({r.accepted.rate / r.noop.rate:.2f}x); no-op as matchops runs it "
                    f"{r.noop_as_matchops.rate:,.0f}/s",
                )
                for index, r in enumerate(rounds, 1)
            ),
            (
                "median, task base alone",
                f"{median(lambda r: r.floor.rate / r.noop.rate)} the no-op (goal >= 0.6x), "
                f"accepted by the API {median(lambda r: r.accepted.rate / r.noop.rate)}",
            ),
            (
                "median, peer.request",
                f"{median(lambda r: r.request.rate / r.noop.rate)} the no-op, "
                f"{median(lambda r: r.request.rate / r.floor.rate)} the floor (goal >= 0.8x)",
            ),
            (
                "median, against the no-op as matchops runs it",
                f"task base alone {median(lambda r: r.floor.rate / r.noop_as_matchops.rate)}, "
                "accepted by the API "
                f"{median(lambda r: r.accepted.rate / r.noop_as_matchops.rate)}; that no-op is "
                f"{median(lambda r: r.noop_as_matchops.rate / r.noop.rate)} the bare one",
            ),
            cpu("peer.request", lambda r: r.request),
            cpu("task base alone", lambda r: r.floor),
            cpu("accepted by the API", lambda r: r.accepted),
            cpu("bare Celery no-op", lambda r: r.noop),
            cpu("no-op as matchops runs it", lambda r: r.noop_as_matchops),
        ],
    )


def report_frameworks(swept: list[tuple[int, Phase]], rounds: list[DrainRound]) -> None:
    """What Celery and the HTTP server alone cost per request at each rate, against the
    stack's CPU per request: the Celery tasks the stack ran per request at the CPU of
    the no-op as matchops runs it (task events, INFO log: its worker and Redis,
    the drain's median), and the HTTP calls per request at the CPU of one `/healthz`
    call on that phase's API. Neither counts a statement of PostgreSQL's or a line of
    matchops' own work."""
    per_task = statistics.median(r.noop_as_matchops.cpu_total for r in rounds)
    rows = []
    for rate, phase in swept:
        accepted = max(1, len(phase.timings.accepted))
        stack = sum(seconds for part, seconds in phase.cpu.items() if part != BENCH)
        tasks = phase.tasks / accepted
        calls = phase.timings.calls / accepted
        celery = tasks * per_task
        http = calls * phase.probe_cpu * 1000
        rows.append(
            (
                f"{rate} requests/s offered",
                f"{celery + http:.2f} ms per request: Celery {celery:.2f} ms "
                f"({tasks:.2f} tasks x {per_task:.2f} ms), HTTP {http:.2f} ms "
                f"({calls:.2f} calls x {phase.probe_cpu * 1000:.2f} ms); the stack spent "
                f"{stack * 1000 / accepted:.2f} ms",
            )
        )
    report("Celery and the HTTP server alone, per request (goal for the stack: <= 12 ms)", rows)


def report_phase(options: argparse.Namespace, title: str, phase: Phase) -> None:
    """Print one phase's figures as soon as it is done."""
    report(
        f"time to match, {title}: {options.rate} requests/s offered for "
        f"{options.seconds} s over {options.pools} pools",
        [
            ("accepted by the API", f"{phase.accepted_rate:,.0f} requests/s"),
            ("refused (not 202)", f"{phase.timings.refused:,}"),
            ("calls with no answer", unanswered(phase.timings)),
            ("match.* events consumed", f"{phase.timings.consumed:,}"),
            ("(a) request -> match.proposed", percentiles(phase.timings.to_proposed)),
            ("(b) confirm -> match.found", percentiles(phase.timings.to_found)),
            *cpu_rows(phase.cpu, max(1, len(phase.timings.accepted)), "request", phase.elapsed),
        ],
    )


def ratio(slow: list[float], fast: list[float]) -> str:
    """How many times lower the p99 of `fast` is."""
    if len(slow) < 2 or len(fast) < 2:
        return "too few samples"
    p99 = [statistics.quantiles(seconds, n=100, method="inclusive")[98] for seconds in (slow, fast)]
    return f"{p99[0] / p99[1]:.1f}x"


if __name__ == "__main__":
    main()
