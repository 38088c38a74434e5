"""A client that stops talking holds nothing for long, and nobody queues behind it.

A frozen process (SIGSTOP: its kernel still answers TCP, so only the server's
idle-in-transaction timeout can end its transaction) stands in for a worker host that
went silent mid-task. Healthy workers meeting its locks give up after the lock timeout
and come back later instead of waiting; a sweep finding its pool held backs off.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import Text, func, literal, select, text
from sqlalchemy.orm import Session

from core import task_store
from core.db import get_bookkeeping_engine, get_engine, libpq_conninfo, session_factory
from core.settings import Settings, get_settings
from core.task_store import TaskState
from domain.peer.pool_lock import pool_lock_keys
from models.platform import TaskRun
from tests.factories import events_of, unique
from tests.factories_mentorship import make_mentee, make_mentor
from tests.factories_peer import make_pool, matches_of_topic
from tests.support import (
    ROOT,
    lock_waiters,
    send,
    task_finished,
    task_run,
    wait_for,
    worker_taking_over,
)
from workers.app import app
from workers.base import MatchopsTask, lock_retry_countdown

# The frozen client's own bound: short, so the test sees it end in seconds. Its
# session asks the server for it exactly as every matchops session does.
FROZEN_CLIENT_SECONDS = 10
# What the server may add to that bound: it notices the timeout on its next wake-up.
SERVER_SLACK_SECONDS = 3

_HOLD_USER_ROW = """
import sys, time
from sqlalchemy import text
from core.db import session_factory
with session_factory().begin() as session:
    user = {"id": int(sys.argv[1])}
    session.execute(text("SELECT id FROM users WHERE id = :id FOR UPDATE"), user)
    print(session.execute(text("SELECT pg_backend_pid()")).scalar_one(), flush=True)
    time.sleep(600)
"""


@contextmanager
def frozen_client_holding_user(user_id: int) -> Iterator[int]:
    """A matchops process that locks the user's row in an open transaction and then
    freezes (SIGSTOP) for the block; yields its backend pid."""
    env = {**os.environ, "DB_SILENT_CLIENT_SECONDS": str(FROZEN_CLIENT_SECONDS)}
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD_USER_ROW, str(user_id)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        backend = int(process.stdout.readline())
        process.send_signal(signal.SIGSTOP)
        yield backend
    finally:
        process.kill()
        process.wait(10)


def backend_alive(pid: int) -> bool:
    """Whether a server backend with that pid still exists."""
    with get_engine().connect() as connection:
        found = connection.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        )
    return bool(found)


# What pg_settings reports for a matchops session under the default bounds
# (DB_SILENT_CLIENT_SECONDS=30, DB_LOCK_TIMEOUT_MS=3000), in each setting's base unit.
DEFAULT_SESSION_SETTINGS = {
    "idle_in_transaction_session_timeout": "30000",
    "lock_timeout": "3000",
    "tcp_keepalives_idle": "15",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "30000",
    "client_connection_check_interval": "5000",
}
_SESSION_SETTINGS = "SELECT name, setting FROM pg_settings WHERE name = ANY(%(names)s)"
# Client side: SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT.
DEFAULT_SOCKET_OPTIONS = (1, 15, 5, 3, 30000)


def settings_of(connection: psycopg.Connection[Any]) -> dict[str, str]:
    """The session's timeouts as the server has them."""
    rows = connection.execute(_SESSION_SETTINGS, {"names": list(DEFAULT_SESSION_SETTINGS)})
    return {name: setting for name, setting in rows}


def _socket_options(fd: int) -> tuple[int, int, int, int, int]:
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        )
    finally:
        sock.close()


def test_every_kind_of_matchops_connection_carries_the_timeouts(database):
    settings = get_settings()
    assert (settings.db_silent_client_seconds, settings.db_lock_timeout_ms) == (30, 3000)
    host = get_engine().url.host
    if not host or host.startswith("/"):
        pytest.skip("the database is reached over a unix socket: TCP settings do not apply")

    for engine in (get_engine(), get_bookkeeping_engine()):
        with engine.connect() as connection:
            driver = connection.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            assert settings_of(driver) == DEFAULT_SESSION_SETTINGS
            assert _socket_options(driver.pgconn.socket) == DEFAULT_SOCKET_OPTIONS
    # A raw connection outside the engines, as the API's intake opens it.
    with psycopg.connect(libpq_conninfo()) as raw:
        assert settings_of(raw) == DEFAULT_SESSION_SETTINGS
        assert _socket_options(raw.pgconn.socket) == DEFAULT_SOCKET_OPTIONS


def test_a_tasks_guard_transaction_may_idle_as_long_as_the_task_runs(db: Session):
    run_id = str(uuid.uuid4())
    db.add(TaskRun(task_id=run_id, name="peer.sweep", args={}, caller="test", origin="test"))
    db.commit()
    with session_factory().begin() as guard:
        assert task_store.claim_run(guard, run_id, 150) is None
        shown = guard.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one()
    assert shown == "150s"


def test_a_frozen_clients_lock_goes_within_its_bound_and_a_task_behind_it_runs_once(
    worker, db: Session
):
    mentor, mentee = make_mentor(db), make_mentee(db)
    other_mentor, other_mentee = make_mentor(db), make_mentee(db)
    db.commit()

    # One process only: if the blocked task held it, nothing else could run.
    with (
        worker_taking_over(worker, "interactive", "stall-single", {}, concurrency=1),
        frozen_client_holding_user(mentor.id) as frozen_backend,
    ):
        frozen_at = time.monotonic()
        blocked = send("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)
        wait_for(
            lambda: (run := task_run(blocked.id)) is not None and run.deliveries >= 1,
            what="the blocked selection to start",
        )
        free = send("mentorship.select", mentee_id=other_mentee.id, mentor_id=other_mentor.id)
        assert free.get(timeout=30)["status"] == "active"
        # The one process ran other work while the frozen client still held the row.
        assert backend_alive(frozen_backend)

        wait_for(
            lambda: not backend_alive(frozen_backend),
            timeout=FROZEN_CLIENT_SECONDS + SERVER_SLACK_SECONDS,
            what="the server to end the frozen client's transaction",
        )
        released_after = time.monotonic() - frozen_at
        outcome = blocked.get(timeout=60)

    assert released_after <= FROZEN_CLIENT_SECONDS + SERVER_SLACK_SECONDS
    assert outcome["status"] == "active"
    run = task_run(blocked.id)
    assert run.state == TaskState.SUCCESS
    # It met the lock, stepped back and came again: more than one delivery, one outcome.
    assert run.deliveries >= 2
    assert len(events_of(db, "mentorship.matched", mentee_id=mentee.id)) == 1


def test_a_delivery_finding_its_task_row_held_steps_back_and_runs_once(worker, db: Session):
    held_topic, free_topic = unique("row-held"), unique("row-free")
    make_pool(db, 2, topic=held_topic)
    make_pool(db, 2, topic=free_topic)
    task_id = str(uuid.uuid4())
    db.add(
        TaskRun(
            task_id=task_id,
            name="peer.sweep",
            args={"topic": held_topic},
            caller="test",
            origin="test",
            dispatched_at=func.now(),  # published by this test below, by no dispatcher
        )
    )
    db.commit()

    # One process only: a delivery waiting on its row would leave none for other work.
    with worker_taking_over(worker, "sweeps", "row-held-single", {}, concurrency=1):
        with session_factory().begin() as other_delivery:
            other_delivery.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
            task_store.claim_run(other_delivery, task_id, 60)
            held = app.send_task(
                "peer.sweep", kwargs={"topic": held_topic}, task_id=task_id, ignore_result=False
            )
            wait_for(lambda: lock_waiters("%task_runs%") == 1, what="the delivery to meet the row")
            free = send("peer.sweep", topic=free_topic)
            assert free.get(timeout=30) == {"matched": 1}
            assert not task_finished(task_id)
        assert held.get(timeout=90) == {"matched": 1}

    run = task_run(task_id)
    assert run.state == TaskState.SUCCESS
    # The deliveries that met the held row were not counted: they did nothing.
    assert run.deliveries == 1
    assert len(matches_of_topic(db, held_topic)) == 1


def _sweeps_of(topic: str) -> int:
    with get_engine().connect() as connection:
        return int(
            connection.scalar(
                select(func.count())
                .select_from(TaskRun)
                .where(TaskRun.name == "peer.sweep", TaskRun.args["topic"].astext == topic)
            )
            or 0
        )


# Sweeps of a pool held this long by another transaction, at the most: the backoff
# doubles from a quarter second (0.25, 0.5, 1, 2, 4, 8: six waits fill 15.75 s).
HOLD_SECONDS = 20
MOST_SWEEPS_DURING_HOLD = 8


def test_a_sweep_finding_its_pool_held_backs_off_instead_of_looping(worker, db: Session):
    topic = unique("held")
    make_pool(db, 4, topic=topic)
    db.commit()

    with session_factory().begin() as holder:
        # The test's own holder is no silent client: it stays as long as the test says.
        holder.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
        keys = pool_lock_keys(literal("Easy", Text), literal(topic, Text))
        holder.execute(select(func.pg_advisory_xact_lock(*keys)))
        send("peer.sweep", topic=topic)
        deadline = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:
            holder.execute(text("SELECT 1"))
            time.sleep(1)
        during_hold = _sweeps_of(topic)

    assert 2 <= during_hold <= MOST_SWEEPS_DURING_HOLD, during_hold
    # Once the pool is free the next sweep pairs it, at most the longest backoff later.
    wait_for(lambda: len(matches_of_topic(db, topic)) == 2, timeout=20, what="the pool paired")


@pytest.mark.parametrize("silent", [4, 30, 600])
def test_lock_retries_outlast_any_silent_holder(silent):
    # Each retry's shortest wait seen over many draws of the jitter, summed: a task
    # retried as often as the task base allows is still there when the holder is gone.
    retries = MatchopsTask.max_retries
    shortest = [
        min(lock_retry_countdown(n, retries, silent) for _ in range(200)) for n in range(retries)
    ]
    assert sum(shortest) > silent
    assert shortest == sorted(shortest)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"db_lock_timeout_ms": 30000}, "DB_LOCK_TIMEOUT_MS"),
        ({"db_lock_timeout_ms": 20000, "task_soft_time_limit": 15}, "TASK_SOFT_TIME_LIMIT"),
        ({"db_silent_client_seconds": 200}, "DB_SILENT_CLIENT_SECONDS"),
    ],
)
def test_stall_bounds_that_do_not_fit_together_are_refused_at_start_up(values, named):
    with pytest.raises(ValueError, match=named):
        Settings(**values)
