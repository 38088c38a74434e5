"""Storing a task's success in the Redis result backend: matchops' backend, which writes
it without reading first (core.result_backend), against Celery's own Redis backend on
the same Redis, alternating in the same run.

Each store is what a worker does when a task a sibling sent with `send_task` succeeds
(`result_extended`, as matchops configures it); the figure is the CPU of this process
per store, and of Redis.

`python -m bench.result_backend [--stores 3000] [--rounds 3]` (on RESULT_BACKEND, which
must be a `redis://` URL; keys under fresh task ids, expiring as configured). Goal: less
CPU per store than Celery's backend, in every round.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from celery import states
from celery.app.task import Context
from celery.backends.redis import RedisBackend

from bench.cpu import REDIS, read_cpu
from bench.harness import report
from celeryconfig import on_redis
from core.result_backend import Backend
from core.settings import get_settings
from workers.app import app

# A `peer.request` result, as the ledger returns it.
RESULT = {
    "request_id": "00000000-0000-4000-8000-000000000000",
    "status": "pending",
    "user_id": 1,
    "difficulty": "Easy",
    "topic": "graphs",
    "created_at": "2026-01-01T00:00:00+00:00",
}
WARM_UP = 200


def delivered() -> Context:
    """The request of one delivered `peer.request`, as a worker's task sees it."""
    return Context(
        id=str(uuid.uuid4()),
        task="peer.request",
        args=(),
        kwargs={"user_id": 1, "difficulty": "Easy", "topic": "graphs"},
        hostname="bench@host",
        retries=0,
        delivery_info={"routing_key": "interactive"},
    )


def cpu_per_store(backend: RedisBackend, stores: int) -> tuple[float, float]:
    """Microseconds of this process's CPU, and of Redis's, per stored success."""
    for _ in range(WARM_UP):
        backend.store_result(str(uuid.uuid4()), RESULT, states.SUCCESS, request=delivered())
    servers = read_cpu({})
    before = time.process_time()
    for _ in range(stores):
        backend.store_result(str(uuid.uuid4()), RESULT, states.SUCCESS, request=delivered())
    ours = (time.process_time() - before) * 1e6 / stores
    redis_cpu = read_cpu({}).since(servers).get(REDIS, 0.0) * 1e6 / stores
    return ours, redis_cpu


def main() -> None:
    """Alternate the two backends for `--rounds` rounds and print the CPU per store."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    url = get_settings().backend
    if not on_redis(url):
        raise SystemExit(f"bench.result_backend needs a redis:// RESULT_BACKEND, not {url!r}")
    backends: dict[str, RedisBackend] = {
        "matchops' backend": app.backend,
        "Celery's Redis backend": RedisBackend(app=app, url=url),
    }
    assert isinstance(backends["matchops' backend"], Backend)
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in backends}
    for _ in range(options.rounds):
        for name, backend in backends.items():
            figures[name].append(cpu_per_store(backend, options.stores))
    rows = [
        (
            name,
            "client "
            + ", ".join(f"{client:.0f}" for client, _ in rounds)
            + " µs; Redis "
            + ", ".join(f"{server:.0f}" for _, server in rounds)
            + f" µs per store (median client {statistics.median(c for c, _ in rounds):.0f} µs)",
        )
        for name, rounds in figures.items()
    ]
    ours, theirs = figures["matchops' backend"], figures["Celery's Redis backend"]
    ratios = [mine[0] / celery[0] for mine, celery in zip(ours, theirs, strict=True)]
    rows.append(
        (
            "client CPU, matchops / Celery",
            ", ".join(f"{ratio:.2f}x" for ratio in ratios)
            + f" (goal: below 1 in every round: {'met' if max(ratios) < 1 else 'not met'})",
        )
    )
    report(f"a stored success, {options.stores:,} per round, rounds alternating", rows)


if __name__ == "__main__":
    main()
