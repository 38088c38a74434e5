"""The enqueue endpoint under load, next to the same API's liveness probe and raw Celery.

One run, three figures on the same machine in the same minute:
  1. `GET /healthz` of the API with `wrk` (the framework's floor: routing, JSON, HTTP);
  2. `POST /v1/tasks/peer.request` with `wrk` (auth, validation, the durable insert;
     a dispatcher in this bench process publishes what commits, as a worker's would);
  3. `send_task` of the same task from one Python process, no HTTP, no database.
Beside each of the first two, the API's CPU time per call, which the machine's other load
inflates less than it does the throughput.
Goal: enqueue at least half of /healthz's throughput, with p99 under 50 ms.
With `--tracing`, a second API with tracing on (its spans go over OTLP/HTTP to a sink in
this process) takes turns with the first, `--rounds` times each, so the two share whatever
else the machine is doing.

Usage: python -m bench.enqueue [--seconds 10] [--connections 16] [--processes 1]
                               [--tracing] [--rounds 3]
Needs `wrk` (Debian package `wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
from runtime.cli import API_HTTP, API_LOOP
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


class _Discard(BaseHTTPRequestHandler):
    """Takes an OTLP/HTTP export and answers 200 (an empty response message)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        """Silent: a request line per span or enqueue would drown the output."""


@contextmanager
def span_sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint that takes spans and keeps none; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Discard)
    thread = threading.Thread(target=server.serve_forever, name="span-sink", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def tracing_env(endpoint: str) -> dict[str, str]:
    """The standard environment that switches tracing on, exporting to `endpoint`."""
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}


@dataclass(frozen=True)
class Api:
    """A running API: its base URL and its main process."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the API's processes (uvicorn and its workers) have used so far."""
        children = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True)
        ticks = 0
        for pid in [self.pid, *map(int, children.stdout.split())]:
            # Fields 14 and 15 of /proc/PID/stat: user and system time, in clock ticks;
            # the command name before them is in parentheses and may hold spaces.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def api_server(processes: int, env: dict[str, str] | None = None) -> Iterator[Api]:
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
        "--loop",
        API_LOOP,
        "--http",
        API_HTTP,
    ]
    if processes > 1:
        command += ["--workers", str(processes)]
    log = BENCH_LOGS / f"enqueue-api{'-traced' if env else ''}.log"
    server = Child("api", command, log, {"AUTH_SECRET": SECRET, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        server.start()
        with httpx.Client(base_url=url, timeout=1) as http:
            wait_for_api(http)
        yield Api(url, server.pid)
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
    parser.add_argument(
        "--tracing", action="store_true", help="also enqueue with tracing on, in turns"
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns of each with --tracing")
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
    turns: dict[str, list[dict[str, float]]] = {}
    with ExitStack() as servers:
        scratch = servers.enter_context(tempfile.TemporaryDirectory())
        api = servers.enter_context(api_server(options.processes))
        url = api.url
        script = post_script(Path(scratch), token)
        wrk(f"{url}/healthz", 2, options.connections)  # warm-up
        health = costed(api, "/healthz", options)
        before = recorded_tasks()
        enqueue = costed(api, "/v1/tasks/peer.request", options, script)
        time.sleep(1)  # what the dispatcher has not published a second later, it never did
        accepted = recorded_tasks() - before
        published = int(broker.llen(QUEUE))
        if options.tracing:
            sink = servers.enter_context(span_sink())
            traced = servers.enter_context(api_server(options.processes, tracing_env(sink)))
            turns = tracing_turns(api, traced, script, options)
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
                f"{health['rps']:,.0f}/s  p50 {health['p50']:.1f} ms  p99 {health['p99']:.1f} ms  "
                f"API CPU {health['cpu_us']:.0f} us/call",
            ),
            (
                "POST /v1/tasks/peer.request",
                f"{enqueue['rps']:,.0f}/s  p50 {enqueue['p50']:.1f} ms  "
                f"p99 {enqueue['p99']:.1f} ms  API CPU {enqueue['cpu_us']:.0f} us/call  "
                f"({enqueue['errors']:.0f} non-2xx)",
            ),
            ("raw send_task, one process", f"{send_rate:,.0f}/s"),
            ("enqueue / healthz throughput", f"{enqueue['rps'] / health['rps']:.0%} (goal >= 50%)"),
            ("enqueue / raw send_task", f"{enqueue['rps'] / send_rate:.0%}"),
            ("enqueue p99", f"{enqueue['p99']:.1f} ms (goal < 50 ms)"),
            ("accepted (rows) / published", f"{accepted:,} / {published:,}"),
        ],
    )
    if turns:
        report_tracing(turns, options)


def tracing_turns(
    untraced: Api, traced: Api, script: Path, options: argparse.Namespace
) -> dict[str, list[dict[str, float]]]:
    """wrk against the API with tracing off and the one with it on, in turns, each run with
    the API's CPU time per request."""
    turns: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    wrk(f"{traced.url}/v1/tasks/peer.request", 2, options.connections, script)  # warm-up
    for _ in range(options.rounds):
        for mode, api in (("off", untraced), ("on", traced)):
            turns[mode].append(costed(api, "/v1/tasks/peer.request", options, script))
    return turns


def costed(
    api: Api, path: str, options: argparse.Namespace, script: Path | None = None
) -> dict[str, float]:
    """One wrk run against `path`, with the API's CPU time per call (`cpu_us`), which other
    load on the machine does not inflate as it does the wall-clock figures."""
    before = api.cpu_seconds()
    run = wrk(f"{api.url}{path}", options.seconds, options.connections, script)
    run["cpu_us"] = (api.cpu_seconds() - before) / (run["rps"] * options.seconds) * 1e6
    return run


def report_tracing(turns: dict[str, list[dict[str, float]]], options: argparse.Namespace) -> None:
    """Median throughput, p99 and API CPU per request of each mode, and their ratios."""
    median = {
        mode: {key: statistics.median(run[key] for run in runs) for key in ("rps", "p99", "cpu_us")}
        for mode, runs in turns.items()
    }
    rows = [
        (
            f"tracing {mode}",
            f"{median[mode]['rps']:,.0f}/s  p99 {median[mode]['p99']:.1f} ms  "
            f"API CPU {median[mode]['cpu_us']:.0f} us/request  "
            f"(runs: {', '.join(format(run['rps'], ',.0f') for run in turns[mode])})",
        )
        for mode in ("off", "on")
    ]
    rows.append(("on / off throughput", f"{median['on']['rps'] / median['off']['rps']:.0%}"))
    rows.append(
        ("on / off API CPU per request", f"{median['on']['cpu_us'] / median['off']['cpu_us']:.2f}x")
    )
    report(
        f"enqueue with tracing off and on, in turns: {options.rounds} x {options.seconds} s each, "
        f"medians",
        rows,
    )


if __name__ == "__main__":
    main()
