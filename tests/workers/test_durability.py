"""Accepted tasks run, and run once, whatever happens to the worker or the broker.

Each test breaks one thing a sibling service cannot see: the same task id delivered
twice (what Redis does when it restores a message whose worker died after its commit;
the RabbitMQ tests kill such a worker for real), a message that keeps killing its
worker, a worker killed outright on Redis, a broker that lost its data. The ledger (task_runs)
and the domain rows must show one effect and one outcome.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import redis
from celery import Celery
from sqlalchemy import func, select, text

from core.db import get_engine
from core.settings import get_settings
from models.peer import MatchRequest
from tests.api.support import client_for
from tests.factories import make_user
from tests.support import (
    KILLING_WORKER,
    WorkerProcess,
    lock_waiters,
    queue_taken_from,
    redispatching,
    run_task,
    running_worker,
    task_finished,
    task_run,
    wait_for,
)
from workers.app import app


def _requests_of(user_id: int) -> int:
    with get_engine().connect() as connection:
        return int(
            connection.scalar(
                select(func.count())
                .select_from(MatchRequest)
                .where(MatchRequest.user_id == user_id)
            )
            or 0
        )


def _bare_app() -> Celery:
    # What a sibling service has: the URLs and nothing of matchops.
    settings = get_settings()
    return Celery("sibling", broker=settings.broker, backend=settings.backend)


def test_a_task_id_sent_twice_has_one_effect_and_one_outcome(worker, db):
    user = make_user(db)
    db.commit()
    sibling = _bare_app()
    task_id = str(uuid.uuid4())
    kwargs = {"user_id": user.id, "difficulty": "Easy", "topic": "graphs"}
    first = sibling.send_task("peer.request", kwargs=kwargs, task_id=task_id, queue="interactive")
    answer = first.get(timeout=30)
    # The request closes; a second request by the same id must not open another one.
    run_task("peer.cancel", request_id=answer["request_id"], user_id=user.id)
    sibling.send_task("peer.request", kwargs=kwargs, task_id=task_id, queue="interactive")
    wait_for(lambda: task_run(task_id).deliveries == 2, what="the second delivery")
    run = task_run(task_id)
    assert (run.state, run.result, run.caller, run.origin) == (
        "SUCCESS",
        answer,
        "send_task",
        "send_task",
    )
    assert _requests_of(user.id) == 1


def test_a_message_that_keeps_killing_its_worker_ends_as_failure(worker, db, api_url: str):
    task_id = str(uuid.uuid4())
    env = {"MATCHOPS_TEST_KILL": f"claimed:{task_id}", "TASK_MAX_DELIVERIES": "3"}
    with (
        queue_taken_from(worker, "events"),
        running_worker("poisoned", queues="events", extra_env=env, entry=KILLING_WORKER),
    ):
        app.send_task("events.publish", task_id=task_id)
        wait_for(lambda: task_finished(task_id), timeout=90, what="the task to be given up")
    run = task_run(task_id)
    assert (run.state, run.deliveries) == ("FAILURE", 4)
    assert run.error == {
        "type": "GaveUp",
        "message": "gave up after 3 deliveries",
        "status": 500,
    }
    # The same answer through the API, for a caller that may read every task.
    with client_for(api_url, ["tasks:read"]) as http:
        body = http.get(f"/v1/tasks/{task_id}").json()
    assert body["state"] == "FAILURE"
    assert body["error"]["message"] == "gave up after 3 deliveries"


@contextmanager
def _worker_to_kill(user_id: int, name: str) -> Iterator[Callable[[], None]]:
    """A worker of its own on `interactive`, whose `peer.request` for `user_id` will wait
    behind an uncommitted request of the same user; the block gets the function that
    kills it outright, main process and pool together (Redis then keeps the message
    unacknowledged until its visibility timeout, minutes away)."""
    victim = WorkerProcess(name, queues="interactive")
    victim.wait_ready()
    blocker = get_engine().connect()

    def kill() -> None:
        os.killpg(victim.process.pid, signal.SIGKILL)
        victim.process.wait(10)

    try:
        blocker.execute(
            text(
                "INSERT INTO match_requests (user_id, difficulty, topic) "
                "VALUES (:user, 'Hard', 'blocking')"
            ),
            {"user": user_id},
        )
        yield kill
    finally:
        blocker.rollback()
        blocker.close()
        victim.stop()


def test_a_worker_killed_outright_on_redis_has_its_task_run_once(worker, db, client: httpx.Client):
    user = make_user(db)
    db.commit()
    with queue_taken_from(worker, "interactive"):
        with _worker_to_kill(user.id, "killed-outright") as kill:
            task_id = client.post(
                "/v1/tasks/peer.request",
                json={"args": {"user_id": user.id, "difficulty": "Hard", "topic": "graphs"}},
            ).json()["task_id"]
            wait_for(lambda: lock_waiters("%INSERT INTO match_requests%") == 1)
            # A first delivery counts itself only with its outcome.
            assert (task_run(task_id).state, task_run(task_id).deliveries) == ("PENDING", 0)
            kill()
        with running_worker("rescuer", queues="interactive"), redispatching(2):
            wait_for(
                lambda: task_finished(task_id), timeout=60, what="the task to be dispatched again"
            )
    run = task_run(task_id)
    assert run.state == "SUCCESS"
    # The killed first delivery would have counted itself with its outcome; the
    # redispatched one counted itself first.
    assert (run.deliveries, run.redispatches) == (1, 1)
    assert _requests_of(user.id) == 1


def _broker() -> redis.Redis:
    return redis.Redis.from_url(get_settings().broker)


def test_a_siblings_task_lost_with_its_worker_and_the_broker_still_answers_its_get(worker, db):
    user = make_user(db)
    db.commit()
    sibling = _bare_app()
    with queue_taken_from(worker, "interactive"):
        with _worker_to_kill(user.id, "lost-with-the-broker") as kill:
            sent = sibling.send_task(
                "peer.request",
                kwargs={"user_id": user.id, "difficulty": "Hard", "topic": "graphs"},
                queue="interactive",
            )
            wait_for(lambda: lock_waiters("%INSERT INTO match_requests%") == 1)
            # A sibling's delivery is counted before its work: the row is there to hand
            # out again once the message is gone.
            assert task_run(sent.id).deliveries == 1
            kill()
            _broker().flushdb()
        with running_worker("rescuer", queues="interactive"), redispatching(2):
            answer = sent.get(timeout=60)
    run = task_run(sent.id)
    assert (run.state, run.result, run.redispatches) == ("SUCCESS", answer, 1)
    assert _requests_of(user.id) == 1


def test_a_task_accepted_before_the_broker_lost_its_data_still_runs(
    worker, db, client: httpx.Client
):
    user = make_user(db)
    db.commit()
    with queue_taken_from(worker, "interactive"):
        task_id = client.post(
            "/v1/tasks/peer.request",
            json={"args": {"user_id": user.id, "difficulty": "Easy", "topic": "arrays"}},
        ).json()["task_id"]
        wait_for(lambda: _broker().llen("interactive") >= 1, what="the message in the broker")
        _broker().flushdb()
    with redispatching(2):
        wait_for(lambda: task_finished(task_id), timeout=60, what="the redispatch")
    assert task_run(task_id).state == "SUCCESS"
    assert _requests_of(user.id) == 1


def test_a_countdown_survives_a_worker_restart_and_a_broker_flush(worker, db, client: httpx.Client):
    user = make_user(db)
    db.commit()
    with queue_taken_from(worker, "interactive"):
        with running_worker("before-restart", queues="interactive"):
            task_id = client.post(
                "/v1/tasks/peer.request",
                json={
                    "args": {"user_id": user.id, "difficulty": "Easy", "topic": "heaps"},
                    "countdown": 3,
                },
            ).json()["task_id"]
        _broker().flushdb()
        assert task_run(task_id).dispatched_at is None  # it waits in PostgreSQL
        with running_worker("after-restart", queues="interactive"):
            wait_for(lambda: task_finished(task_id), timeout=60, what="the countdown task to run")
    assert task_run(task_id).state == "SUCCESS"
    assert _requests_of(user.id) == 1
