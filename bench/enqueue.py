"""The enqueue endpoint under load, next to the same API's liveness probe and raw Celery.

One run, three figures on the same machine in the same minute:
  1. `GET /healthz` of the API with `wrk` (the framework's floor: routing, JSON, HTTP);
  2. `POST /v1/tasks/peer.request` with `wrk` (auth, validation, the durable insert;
     a dispatcher in this bench process publishes what commits, as a worker's would);
  3. `send_task` of the same task from one Python process, no HTTP, no database.
Goal: enqueue at least half of /healthz's throughput, with p99 under 50 ms.

Usage: python -m bench.enqueue [--seconds 10] [--connections 16] [--processes 1]
Needs `wrk` (Debian package `wrk`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis
from sqlalchemy import func, select

from api.auth import issue_token
from bench.harness import (
    BENCH_LOGS,
    autocommit_connection,
    report,
    use_bench_database,
    wait_for_api,
)
from core.db import get_bookkeeping_engine
from core.dispatcher import Dispatcher
from core.redis_options import REDIS_CLIENT_OPTIONS
from core.settings import get_settings
from models.platform import TaskRun
from runtime.children import Child
from runtime.embedded import free_port
from workers.app import app

SECRET = "matchops-bench-enqueue-secret-0123456789"
ARGS = {"user_id": 42, "difficulty": "Easy", "topic": "graphs"}
QUEUE = "interactive"


def _wrk_line(output: str, pattern: str) -> str:
    found = re.search(pattern, output, re.MULTILINE)
    if not found:
        raise RuntimeError(f"wrk printed no {pattern!r}:\n{output}")
    return found.group(1)


def _ms(figure: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", figure).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, seconds: int, connections: int, script: Path | None = None) -> dict[str, float]:
    """Requests/s, p50 and p99 in ms, and non-2xx answers of one wrk run."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": float(_wrk_line(output, r"^Requests/sec:\s+([\d.]+)")),
        "p50": _ms(_wrk_line(output, r"^\s+50%\s+(\S+)")),
        "p99": _ms(_wrk_line(output, r"^\s+99%\s+(\S+)")),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def post_script(directory: Path, token: str) -> Path:
    """A wrk Lua script that POSTs one peer.request per call."""
    body = json.dumps({"args": ARGS}).replace('"', '\\"')
    script = directory / "enqueue.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    return script


@contextmanager
def api_server(processes: int) -> Iterator[str]:
    """The API as `matchops api` runs it, on a free port, for the bench's database."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "api.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    if processes > 1:
        command += ["--workers", str(processes)]
    server = Child("api", command, BENCH_LOGS / "enqueue-api.log", {"AUTH_SECRET": SECRET})
    url = f"http://127.0.0.1:{port}"
    try:
        server.start()
        with httpx.Client(base_url=url, timeout=1) as http:
            wait_for_api(http)
        yield url
    finally:
        server.stop(20)


def raw_send_task(count: int) -> float:
    """send_task of peer.request from this process, per second (no HTTP, no database)."""
    with app.producer_or_acquire() as producer:
        started = time.perf_counter()
        for _ in range(count):
            app.send_task("peer.request", kwargs=ARGS, producer=producer, ignore_result=True)
        return count / (time.perf_counter() - started)


def recorded_tasks() -> int:
    with autocommit_connection() as connection:
        return int(connection.scalar(select(func.count()).select_from(TaskRun)) or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1, help="API processes")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench.enqueue needs wrk: apt-get install wrk")

    use_bench_database("matchops_bench_enqueue")
    broker = redis.Redis.from_url(get_settings().broker, **REDIS_CLIENT_OPTIONS)
    broker.delete(QUEUE)
    token = issue_token(SECRET, "bench", ["*"], 3600)
    settings = get_settings()
    dispatcher = Dispatcher(
        app,
        get_bookkeeping_engine(),
        interval=settings.dispatch_interval_seconds,
        redispatch_after=settings.redispatch_after_seconds,
    )
    dispatcher.start()
    with tempfile.TemporaryDirectory() as scratch, api_server(options.processes) as url:
        script = post_script(Path(scratch), token)
        wrk(f"{url}/healthz", 2, options.connections)  # warm-up
        health = wrk(f"{url}/healthz", options.seconds, options.connections)
        before = recorded_tasks()
        enqueue = wrk(f"{url}/v1/tasks/peer.request", options.seconds, options.connections, script)
        time.sleep(1)  # what the dispatcher has not published a second later, it never did
        accepted = recorded_tasks() - before
        published = int(broker.llen(QUEUE))
    dispatcher.stop()
    broker.delete(QUEUE)
    send_rate = raw_send_task(5000)
    broker.delete(QUEUE)

    report(
        f"enqueue: {options.connections} connections, {options.seconds} s each, "
        f"{options.processes} API process(es)",
        [
            (
                "GET /healthz",
                f"{health['rps']:,.0f}/s  p50 {health['p50']:.1f} ms  p99 {health['p99']:.1f} ms",
            ),
            (
                "POST /v1/tasks/peer.request",
                f"{enqueue['rps']:,.0f}/s  p50 {enqueue['p50']:.1f} ms  "
                f"p99 {enqueue['p99']:.1f} ms  ({enqueue['errors']:.0f} non-2xx)",
            ),
            ("raw send_task, one process", f"{send_rate:,.0f}/s"),
            ("enqueue / healthz throughput", f"{enqueue['rps'] / health['rps']:.0%} (goal >= 50%)"),
            ("enqueue / raw send_task", f"{enqueue['rps'] / send_rate:.0%}"),
            ("enqueue p99", f"{enqueue['p99']:.1f} ms (goal < 50 ms)"),
            ("accepted (rows) / published", f"{accepted:,} / {published:,}"),
        ],
    )


if __name__ == "__main__":
    main()
