"""Test plumbing shared by every test package: databases, workers, task calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.result import AsyncResult
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from celeryconfig import QUEUE_NAMES
from core.db import get_engine
from core.dispatcher import Dispatcher
from core.redis_options import REDIS_CLIENT_OPTIONS
from core.settings import get_settings
from models.platform import OutboxEvent, TaskRun
from runtime.children import Child
from runtime.polling import poll_until
from runtime.stack import wait_for_worker
from submission.service import task_catalogue
from workers.app import app

ROOT = Path(__file__).resolve().parent.parent
# Per test process, so two suites running side by side keep their own logs.
TEST_LOGS = ROOT / ".matchops" / "test-logs" / str(os.getpid())
ALL_QUEUES = ",".join(QUEUE_NAMES)
# The queues the docs name, spelled out rather than read from celeryconfig: a queue
# added there, or dropped, must be added or dropped here too.
DOCUMENTED_QUEUES = frozenset(
    {"interactive", "answers", "sweeps", "cascades", "maintenance", "events", "celery"}
)
# For a worker of a test that kills a task while it waits on a lock the test holds: the
# wait lasts until the test has seen it, rather than the default lock timeout.
LONG_LOCK_WAIT = {"DB_LOCK_TIMEOUT_MS": "20000"}
# A worker whose pool kills itself at a point a test chooses (tests/killing_worker.py).
KILLING_WORKER = ("-m", "tests.killing_worker")


class WorkerProcess:
    """A real `celery worker` subprocess of this app, ready once it answers a ping."""

    def __init__(
        self,
        name: str,
        queues: str = ALL_QUEUES,
        concurrency: int = 2,
        log_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        entry: tuple[str, ...] = ("-m", "celery", "-A", "workers.app"),
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.name = f"{name}@matchops-tests"
        env = extra_env or {}
        # Control messages of this process travel on its own broker: a worker on another
        # one can only be watched through its log.
        self.own_broker = "BROKER_URL" in env and env["BROKER_URL"] != os.environ.get("BROKER_URL")
        self.child = Child(
            name,
            [
                sys.executable,
                *entry,
                "worker",
                *("-P", "prefork", "-c", str(concurrency), "-Q", queues, "-n", self.name),
                *("-l", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"),
                *extra_args,
            ],
            (log_dir or TEST_LOGS) / f"{name}.log",
            env,
        )
        self.child.start()

    @property
    def log_path(self) -> Path:
        """The worker's output."""
        return self.child.log_path

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The worker's main process."""
        assert self.child.process is not None
        return self.child.process

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until the worker answers a ping (or, on a broker of its own, says ready)."""
        wait_for_worker(app, self.child, self.name, timeout, log_says_ready=self.own_broker)

    def child_pids(self) -> list[int]:
        """Pids of the prefork pool processes."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the worker's output."""
        return self.child.log_tail(lines)

    def stop(self) -> None:
        """SIGTERM to the worker and its pool (running tasks end now), then kill if it
        does not go."""
        self.child.stop(20, group=True)


@contextmanager
def running_worker(name: str, **kwargs: Any) -> Iterator[WorkerProcess]:
    """A worker for the duration of a `with` block."""
    worker = WorkerProcess(name, **kwargs)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@contextmanager
def running_beat(
    log_path: Path, level: str = "INFO", extra_env: dict[str, str] | None = None
) -> Iterator[Child]:
    """`celery beat` of this app for the block; its schedule file sits next to its log."""
    beat = Child(
        "beat",
        [
            *(sys.executable, "-m", "celery", "-A", "workers.app", "beat"),
            *("--schedule", str(log_path.with_suffix(".schedule")), "-l", level),
        ],
        log_path,
        extra_env or {},
    )
    beat.start()
    try:
        yield beat
    finally:
        beat.stop(10)


def run_task(name: str, timeout: float = 60, **kwargs: Any) -> Any:
    """Send `name` with JSON kwargs through the broker and wait for its result.

    A domain error raised by the task is raised here again, with its type. Every
    result is checked against the task's published result shape on the way.
    """
    # Periodic tasks store no result unless the message asks for one, as this one does.
    result: AsyncResult[Any] = app.send_task(name, kwargs=kwargs, ignore_result=False)
    value = result.get(timeout=timeout, propagate=True, disable_sync_subtasks=False)
    assert_fits_result_shape(name, value)
    return value


def assert_fits_result_shape(name: str, result: Any) -> None:
    """Fail unless `result` is, as JSON, exactly what task `name`'s result shape describes.

    Strict JSON validation refuses a missing or unknown key and a value of another JSON
    type; reading the value back must give the very same JSON, so nothing was coerced.
    """
    adapter = task_catalogue()[name].result_adapter
    try:
        parsed = adapter.validate_json(json.dumps(result), strict=True)
    except ValidationError as exc:
        raise AssertionError(f"{name} returned {result!r}, off its result shape:\n{exc}") from None
    assert adapter.dump_python(parsed, mode="json") == result, f"{name} returned {result!r}"


def send(name: str, **kwargs: Any) -> AsyncResult[Any]:
    """Send without waiting; the result is stored even for tasks that usually store none."""
    return app.send_task(name, kwargs=kwargs, ignore_result=False)


def wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    """Poll `predicate` every 0.1 s until it is truthy; fail after `timeout` seconds."""
    if not poll_until(predicate, timeout):
        raise AssertionError(f"timed out waiting for {what}")


def lock_waiters(query_like: str | None = None) -> int:
    """Sessions of this database waiting on a lock, optionally only those whose query
    matches `query_like` (an ILIKE pattern such as '%FROM outbox%')."""
    return len(lock_waiter_pids(query_like))


def lock_waiter_pids(query_like: str | None = None) -> set[int]:
    """Backend pids of the sessions `lock_waiters` counts."""
    sql = (
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    params: dict[str, str] = {}
    if query_like is not None:
        sql += " AND query ILIKE :pattern"
        params["pattern"] = query_like
    # A fresh connection each time: pg_stat_activity is a per-transaction snapshot.
    with get_engine().connect() as conn:
        return set(conn.scalars(text(sql), params))


@contextmanager
def queue_taken_from(worker: WorkerProcess, queue: str) -> Iterator[None]:
    """The session worker stops consuming `queue` for the block, so only the workers the
    test starts itself can take its messages."""
    # A worker that has just started may still be setting up its consumers and take the
    # queue up again: cancel until it reports the queue gone.
    wait_for(lambda: _cancelled(worker, queue), timeout=20, what=f"{worker.name} to leave {queue}")
    try:
        yield
    finally:
        app.control.add_consumer(queue, destination=[worker.name], reply=True)


def _cancelled(worker: WorkerProcess, queue: str) -> bool:
    app.control.cancel_consumer(queue, destination=[worker.name], reply=True)
    replies = app.control.inspect(destination=[worker.name], timeout=1).active_queues() or {}
    consumed = replies.get(worker.name)
    return consumed is not None and all(q["name"] != queue for q in consumed)


@contextmanager
def worker_taking_over(
    worker: WorkerProcess, queue: str, name: str, env: dict[str, str], concurrency: int = 2
) -> Iterator[WorkerProcess]:
    """A worker of the test's own, with `env` on top of this session's environment (other
    settings, say), consumes `queue` instead of the session worker for the block."""
    with (
        queue_taken_from(worker, queue),
        running_worker(name, queues=queue, concurrency=concurrency, extra_env=env) as taking_over,
    ):
        yield taking_over


def capped_sweeper(
    worker: WorkerProcess, name: str, cap: int, concurrency: int = 2
) -> AbstractContextManager[WorkerProcess]:
    """A worker of the test's own, with MAX_CONCURRENT_MATCHES=`cap`, takes over the
    `sweeps` queue for the block."""
    return worker_taking_over(
        worker, "sweeps", name, {"MAX_CONCURRENT_MATCHES": str(cap)}, concurrency
    )


def unpublished_events(db: Session, marker: str) -> int:
    """Outbox events whose data carries `marker` that no relay has marked published."""
    return int(
        db.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(OutboxEvent.published_at.is_(None), OutboxEvent.data["marker"].astext == marker)
        )
        or 0
    )


def task_run(task_id: str) -> Any:
    """The task's `task_runs` row as it is now (None when no one recorded the id)."""
    with get_engine().connect() as connection:
        return connection.execute(select(TaskRun).where(TaskRun.task_id == task_id)).one_or_none()


def task_finished(task_id: str) -> bool:
    """Whether the task has an outcome."""
    run = task_run(task_id)
    return run is not None and run.finished_at is not None


def sent_twice_with_own_id(
    sibling: Celery, name: str, kwargs: dict[str, Any], task_id: str
) -> tuple[Any, Any]:
    """A sibling's own Celery app sends `name` twice under its own `task_id`; the answer to
    each send. The first result is forgotten before the second send, so the second answer
    is the second delivery's own, not the first one read back from the backend."""
    first = sibling.send_task(name, kwargs=kwargs, task_id=task_id)
    first_answer = first.get(timeout=60)
    first.forget()
    second = sibling.send_task(name, kwargs=kwargs, task_id=task_id)
    return first_answer, second.get(timeout=60)


@contextmanager
def redispatching(after_seconds: int) -> Iterator[None]:
    """A dispatcher of this process that publishes unfinished tasks again after
    `after_seconds`."""
    dispatcher = Dispatcher(app, get_engine(), interval=0.2, redispatch_after=after_seconds)
    dispatcher.start()
    try:
        yield
    finally:
        dispatcher.stop()


def redis_commands_naming(
    key: str, action: Callable[[], object], url: str | None = None
) -> list[str]:
    """The commands the Redis at `url` (the result backend's unless told) received from
    any client naming `key` while `action` ran, in order, by name."""
    return [command.split()[0].upper() for command in redis_commands(key, action, url)]


def redis_commands(key: str, action: Callable[[], object], url: str | None = None) -> list[str]:
    """The commands, whole, that the Redis at `url` (the result backend's unless told)
    received from any client naming `key` while `action` ran, in order (MONITOR sees
    every client's; a closing ECHO marks the end)."""
    url = url or get_settings().backend
    end = f"end-{uuid.uuid4()}"
    monitored = redis.Redis.from_url(url, **REDIS_CLIENT_OPTIONS)
    with monitored.monitor() as monitor:
        action()
        redis.Redis.from_url(url, **REDIS_CLIENT_OPTIONS).echo(end)
        seen = []
        while end not in (command := monitor.next_command()["command"]):
            if key in command:
                seen.append(command)
    return seen
