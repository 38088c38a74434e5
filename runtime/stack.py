"""The local stack behind `make run` / `make demo`: one worker, beat, the API and Flower.

Each part is a `matchops` subcommand in a child process of its own session, so Ctrl-C
reaches only this supervisor, which then stops the children in order (a worker's warm
shutdown lets its current tasks finish). Children also get SIGTERM if the supervisor
dies without cleaning up, so no orphan keeps a port.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from kombu.utils.url import maybe_sanitize_url

from core.settings import get_settings
from runtime import credentials, embedded
from runtime.children import REPO_ROOT, Child
from runtime.polling import poll_until
from runtime.stopping import announced, running_tasks

if TYPE_CHECKING:
    from celery import Celery

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
# After this long without every part gone, stopping says which ones it waits for.
SLOW_STOP = 3.0
RUN_TOKEN_TTL = 24 * 3600
# Admission control of the local API, unless MAX_QUEUE_WAIT_SECONDS is exported: a
# task that has not started after this long means the one worker is not keeping up,
# and callers are told to come back instead of joining the backlog (README,
# Configuration).
LOCAL_MAX_QUEUE_WAIT_SECONDS = "5"


class StackError(RuntimeError):
    """A part of the stack failed to start or died; the message includes its log tail."""


def wait_for_worker(
    celery: Celery, child: Child, node: str, timeout: float, *, log_says_ready: bool = False
) -> None:
    """Block until the worker `child`, Celery node `node` of `celery`, answers a ping.

    With `log_says_ready`, watch its log for Celery's "`node` ready." line instead: a
    worker on a broker of its own, which `celery`'s pings never reach. A StackError with
    the log's last lines when the worker exits first, or does not answer within `timeout`.
    """

    def ready() -> bool:
        if not child.running():
            raise StackError(f"worker {child.name} exited:\n{child.log_tail(60)}")
        if log_says_ready:
            return f"{node} ready." in child.log_path.read_text(errors="replace")
        return bool(celery.control.ping(destination=[node], timeout=0.5))

    # A ping waits half a second for its answer by itself.
    if not poll_until(ready, timeout, interval=0.2 if log_says_ready else 0):
        raise StackError(
            f"worker {child.name} did not answer within {timeout:g}s:\n{child.log_tail(60)}"
        )


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _check_port_free(port: int, what: str, option: str) -> None:
    if not _port_is_free(port):
        raise StackError(
            f"port {port} for {what} is in use (another `make run`?). "
            f"Stop it, or pick another port: matchops run {option} PORT"
        )


@dataclass
class Stack:
    """The processes of the local stack and where to reach them."""

    api_port: int
    flower_port: int
    mode: str
    # The embedded servers the stack uses (None: the environment names its servers).
    servers: embedded.EmbeddedServers | None = None
    children: list[Child] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        # One folder per mode: a `make demo` next to a `make run` keeps its own logs.
        return embedded.DEFAULT_HOME / "logs" / self.mode

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.flower_port}"

    @property
    def worker_name(self) -> str:
        return f"{self.mode}-{os.getpid()}@{socket.gethostname()}"

    def start(self) -> None:
        """Start worker, beat, API and Flower and wait until each answers."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        beat_schedule = embedded.DEFAULT_HOME / f"celerybeat-schedule-{self.mode}"
        parts = {
            "worker": [
                "worker",
                "-c",
                "2",
                "-n",
                self.worker_name,
                # Gossip and mingle only slow start-up of a one-worker stack.
                "--without-gossip",
                "--without-mingle",
            ],
            "beat": ["beat", "--schedule", str(beat_schedule)],
            "api": ["api", "--port", str(self.api_port)],
            "flower": ["flower", "--port", str(self.flower_port)],
        }
        admission = {
            "MAX_QUEUE_WAIT_SECONDS": os.environ.get(
                "MAX_QUEUE_WAIT_SECONDS", LOCAL_MAX_QUEUE_WAIT_SECONDS
            )
        }
        for name, argv in parts.items():
            env = admission if name == "api" else None
            child = Child.matchops(name, argv, self.log_dir / f"{name}.log", env)
            self.children.append(child)
            child.start()
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        from workers.app import app

        user, password = credentials.parse_basic_auth(os.environ["FLOWER_BASIC_AUTH"])
        pending = {"worker", "api", "flower"}
        with httpx.Client(timeout=2) as http:

            def all_ready() -> bool:
                self.check_alive()
                if "api" in pending and _answers(http, f"{self.api_url}/readyz"):
                    pending.discard("api")
                if "flower" in pending and _answers(
                    http, f"{self.flower_url}/healthcheck", auth=(user, password)
                ):
                    pending.discard("flower")
                if "worker" in pending and app.control.ping(
                    destination=[self.worker_name], timeout=0.5
                ):
                    pending.discard("worker")
                return not pending

            if not poll_until(all_ready, READY_TIMEOUT):
                raise StackError(f"not ready after {READY_TIMEOUT:g}s: {', '.join(pending)}")

    def check_alive(self) -> None:
        """Raise StackError naming the first part that exited, with its log tail."""
        for child in self.children:
            if not child.running():
                raise StackError(
                    f"the {child.name} exited; last lines of {child.log_path}:\n{child.log_tail()}"
                )

    def stop(self) -> None:
        """SIGTERM every part (worker: warm shutdown), then wait; stragglers are killed.

        Says what it waits for: a long task can hold the worker for most of STOP_TIMEOUT.
        """
        # Asked before the SIGTERM: a worker in warm shutdown no longer answers.
        busy = running_tasks(self.worker_name) if self.children else []
        for child in self.children:
            child.terminate()
        if busy:
            _say(
                f"waiting up to {STOP_TIMEOUT:g}s for the worker to finish {', '.join(busy)}; "
                "Ctrl-C again stops it now (the task then runs again on the next start)"
            )
        started = time.monotonic()

        def all_gone() -> bool:
            return not any(child.running() for child in self.children)

        if not busy and not poll_until(all_gone, SLOW_STOP):
            left = ", ".join(child.name for child in self.children if child.running())
            _say(f"still waiting for: {left} (Ctrl-C again stops them now)")
        poll_until(all_gone, STOP_TIMEOUT - (time.monotonic() - started))
        for child in self.children:
            child.wait(0)


def _answers(http: httpx.Client, url: str, auth: tuple[str, str] | None = None) -> bool:
    try:
        return http.get(url, auth=auth).status_code == 200
    except httpx.HTTPError:
        return False


def _ports(mode: str, api_port: int, flower_port: int) -> tuple[int, int]:
    """The API's and Flower's ports: StackError when `run` finds one in use."""
    if mode == "run":
        _check_port_free(api_port, "the API", "--api-port")
        _check_port_free(flower_port, "Flower", "--flower-port")
    else:
        # The demo talks only to its own API, so a busy default port (a `make run` in
        # another shell) is no reason to fail: a busy port becomes any free one (0).
        api_port = api_port if _port_is_free(api_port) else 0
        flower_port = flower_port if _port_is_free(flower_port) else 0
    return api_port or embedded.free_port(), flower_port or embedded.free_port()


def _prepare(stack: Stack) -> None:
    """Schema and secrets: everything the children need in their environment."""
    from runtime.migrate import upgrade_head

    if stack.servers is not None and stack.servers.shared:
        _say(
            f"using the embedded servers already running under {_shown(stack.servers.home)}/ "
            "(another matchops process started them, and stops them when it exits)"
        )
    credentials.ensure_local_secrets()
    upgrade_head(get_settings().db_url)


class _Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived: leave the foreground loop."""


# A closed terminal (SIGHUP) stops the stack like Ctrl-C does; left alone it would kill
# the supervisor without stopping its children or the embedded servers.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _say(message: str) -> None:
    """Print, unless the terminal is gone (after SIGHUP, writing to it fails)."""
    with contextlib.suppress(OSError):
        print(message, flush=True)


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def _hurry(_signum: int, _frame: FrameType | None) -> None:
    # A second Ctrl-C while stopping: no more waiting for warm shutdown.
    raise KeyboardInterrupt


def _supervise(mode: str, api_port: int, flower_port: int, body: Any) -> int:
    # The banner and the summary must show up at once, also when piped into a file.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        api_port, flower_port = _ports(mode, api_port, flower_port)
    except StackError as exc:
        print(f"matchops {mode}: {exc}", file=sys.stderr)
        return 2
    # `run` owns its embedded servers, and refuses servers that another process started
    # under the same home (a `make demo`, a `make bench`, or a `make run` given other
    # ports): that process would take them down when it exits, under a stack meant to
    # run until Ctrl-C. A finite `make demo` uses those of a running `make run`, its
    # usual companion, which outlives it. The pid file goes last, so `matchops stop`
    # waits for the servers too.
    with announced(mode), embedded.serving(share=mode != "run") as servers:
        stack = Stack(api_port=api_port, flower_port=flower_port, mode=mode, servers=servers)
        _prepare(stack)
        previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS}
        try:
            return _serve(stack, body)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _serve(stack: Stack, body: Any) -> int:
    """Start the stack, run `body`, and stop the stack however `body` ends."""
    try:
        _say(f"starting worker, beat, API and Flower (logs in {_shown(stack.log_dir)}/) ...")
        stack.start()
        return int(body(stack))
    except _Stop:
        _say("\nstopping ...")
        return 0
    except StackError as exc:
        with contextlib.suppress(OSError):
            print(f"matchops {stack.mode}: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, _hurry)
        # Further SIGTERM/SIGHUP while stopping: stopping is already under way.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            stack.stop()
        except KeyboardInterrupt:
            for child in stack.children:
                child.kill_group()


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _token(sub: str, ttl: int) -> str:
    from api.auth import issue_token

    return issue_token(os.environ["AUTH_SECRET"], sub, ["*"], ttl)


def _run_body(stack: Stack) -> int:
    from demo.client import ApiClient
    from demo.runner import print_report, run_demo_scenarios

    token = _token("operator", RUN_TOKEN_TTL)
    print(banner(stack, token))
    client = ApiClient(stack.api_url, _token("demo", RUN_TOKEN_TTL))
    try:
        print("feeding the demo workload once ...")
        print_report(run_demo_scenarios(client))
    finally:
        client.close()
    # Again: the report has scrolled the first one out of sight.
    print(banner(stack, token))
    print("matchops is running. Ctrl-C (or `matchops stop` in another shell) stops it.")
    while True:
        stack.check_alive()
        time.sleep(1)


def _demo_body(stack: Stack) -> int:
    from demo.client import ApiClient
    from demo.runner import print_report, run_demo_scenarios

    started = time.monotonic()
    client = ApiClient(stack.api_url, _token("demo", 3600))
    try:
        report = run_demo_scenarios(client)
    finally:
        client.close()
    print_report(report)
    print(f"\ndemo finished in {time.monotonic() - started:.1f}s: {report.verdict}")
    return 0 if report.ok else 1


def banner(stack: Stack, token: str) -> str:
    """URLs, credentials and a ready-to-paste token and curl call."""
    settings = get_settings()
    servers = stack.servers
    database_note = " (embedded)" if servers and servers.postgres else ""
    broker_note = " (embedded)" if servers and servers.redis_port else ""
    user, password = credentials.parse_basic_auth(os.environ["FLOWER_BASIC_AUTH"])
    return f"""
matchops is up

  API       {stack.api_url}        docs: {stack.api_url}/docs
  Flower    {stack.flower_url}        user {user}, password {password}   metrics: /metrics
  database  {_masked(settings.db_url)}{database_note}
  broker    {_masked(settings.broker)}{broker_note}
  logs      {_shown(stack.log_dir)}/{{worker,beat,api,flower}}.log

API token (scope "*", valid 24 h):

  export TOKEN={token}

Try it:

  curl -s -X POST {stack.api_url}/v1/tasks/maintenance.reconcile \\
       -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"args": {{}}, "wait": 10}}'
  curl -s {stack.api_url}/v1/tasks -H "Authorization: Bearer $TOKEN"
"""


def _masked(url: str) -> str:
    """`url` with any password replaced by ***, for printing. A URL without a password
    is printed whole: kombu rebuilds the URL without its query, which for PostgreSQL
    can name the socket directory (`?host=`)."""
    return maybe_sanitize_url(url, mask="***") if urlsplit(url).password else url


def run_forever(api_port: int, flower_port: int) -> int:
    """`matchops run`: the stack in the foreground, fed the demo once, until Ctrl-C."""
    return _supervise("run", api_port, flower_port, _run_body)


def run_demo(api_port: int, flower_port: int) -> int:
    """`matchops demo`: the stack, one demo end to end, a summary; 0 when all passed."""
    return _supervise("demo", api_port, flower_port, _demo_body)
