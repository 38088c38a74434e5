"""Admission control through a real API process and the session's worker: a queue whose
oldest task waits too long to start is refused with 429 and `Retry-After`, nothing is
recorded, reads and probes still answer, and the door reopens once the queue drains; a
queue whose next task would wait too long at its workers' pace is refused before its
oldest task has waited that long; answers to work under way are judged by their own
queue, not refused with a flood of new requests."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.settings import Settings
from models.platform import TaskRun
from runtime.polling import poll_until
from submission.backlog import IDLE, read_backlogs
from tests.api.support import api_process, client_for
from tests.factories import unique
from tests.support import WorkerProcess, queue_taken_from

# mentorship.rebuild_stats goes to the `maintenance` queue; events.publish to `events`.
BEHIND = "/v1/tasks/mentorship.rebuild_stats"
BEHIND_ARGS: dict[str, dict[str, int]] = {"args": {}}
ELSEWHERE = "/v1/tasks/events.publish"


def _recorded(db: Session, caller: str) -> int:
    db.rollback()  # a fresh snapshot
    return int(
        db.scalar(select(func.count()).select_from(TaskRun).where(TaskRun.caller == caller)) or 0
    )


def _unfinished(db: Session, caller: str) -> int:
    db.rollback()
    return int(
        db.scalar(
            select(func.count())
            .select_from(TaskRun)
            .where(TaskRun.caller == caller, TaskRun.finished_at.is_(None))
        )
        or 0
    )


def _refused(http: httpx.Client) -> float:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "matchops_enqueue_refusals_total" and sample.labels == {
                "status": "429"
            }:
                return sample.value
    return 0.0


def _enqueue_until(http: httpx.Client, status: int, timeout: float) -> None:
    answers: list[httpx.Response] = []

    def answered() -> bool:
        answers.append(http.post(BEHIND, json=BEHIND_ARGS))
        return answers[-1].status_code == status

    assert poll_until(answered, timeout, 0.1), [a.status_code for a in answers[-5:]]


def test_a_queue_behind_is_refused_until_it_drains(db: Session, worker: WorkerProcess) -> None:
    caller = unique("admission")
    with (
        api_process(MAX_QUEUE_WAIT_SECONDS="1") as url,
        client_for(url, ["*"], sub=caller) as http,
    ):
        refused_before = _refused(http)
        with queue_taken_from(worker, "maintenance"):
            first = http.post(BEHIND, json=BEHIND_ARGS)
            assert first.status_code == 202, first.text
            # Accepted until the oldest unstarted task of the queue has waited a second.
            _enqueue_until(http, 429, timeout=15)
            accepted = _recorded(db, caller)

            keys = [unique("refused") for _ in range(5)]
            refused = [
                http.post(BEHIND, json={**BEHIND_ARGS, "idempotency_key": key}) for key in keys
            ]
            for response in refused:
                assert response.status_code == 429, response.text
                assert response.headers["Retry-After"] == "1"
                error = response.json()["error"]
                assert error["type"] == "overloaded"
                assert "'maintenance' queue" in error["message"]
                assert "MAX_QUEUE_WAIT_SECONDS" in error["message"]
            db.rollback()
            assert _recorded(db, caller) == accepted
            assert not db.scalar(
                select(func.count()).select_from(TaskRun).where(TaskRun.idempotency_key.in_(keys))
            )

            # Reads and probes are never refused; another queue still takes work.
            status = http.get(first.json()["status_url"])
            assert status.status_code == 200
            assert status.json()["state"] == "PENDING"
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").status_code == 200
            assert http.post(ELSEWHERE, json={"args": {}}).status_code == 202
            # Every refusal is counted, by status, within a flush.
            assert poll_until(lambda: _refused(http) >= refused_before + 6, 10, 0.2)

        # The worker takes the queue up again and starts what waited: the door reopens.
        _enqueue_until(http, 202, timeout=30)
    # Nothing of this test is left waiting in the queue for the next one.
    assert poll_until(lambda: _unfinished(db, caller) == 0, 60, 0.2)


def test_answers_to_work_under_way_are_not_refused_with_the_new_requests(
    db: Session, worker: WorkerProcess
) -> None:
    caller = unique("answers")
    request_args = {"difficulty": "Easy", "topic": caller}
    with (
        api_process(MAX_QUEUE_WAIT_SECONDS="1") as url,
        client_for(url, ["*"], sub=caller) as http,
        queue_taken_from(worker, "interactive"),
    ):
        answers: list[httpx.Response] = []

        def request_refused() -> bool:
            args = {**request_args, "user_id": len(answers) + 1}
            answers.append(http.post("/v1/tasks/peer.request", json={"args": args}))
            return answers[-1].status_code == 429

        # New requests wait behind the held queue until the door refuses them.
        assert poll_until(request_refused, 15, 0.1), [a.status_code for a in answers[-5:]]
        assert "'interactive' queue" in answers[-1].json()["error"]["message"]
        # Answers to a match or a mentoring request have a queue of their own: admitted.
        confirm = {"match_id": str(uuid.uuid4()), "user_id": 1, "confirmed": True}
        assert http.post("/v1/tasks/peer.confirm", json={"args": confirm}).status_code == 202
        respond = {"relationship_id": 1, "user_id": 1, "accept": True}
        assert http.post("/v1/tasks/mentorship.respond", json={"args": respond}).status_code == 202
    assert poll_until(lambda: _unfinished(db, caller) == 0, 60, 0.2)


def _seed_backlog(db: Session, seeder: str) -> None:
    """The ledger of a `maintenance` queue that workers have been getting through at 2
    tasks a second: 30 waiting for 6 s (PACE_LIMIT / 4 is the window the pace is read
    over), 10 finished a second ago. Never dispatched again within a test: they were
    dispatched just now."""
    for n in range(40):
        waiting = n < 30
        db.add(
            TaskRun(
                task_id=f"{seeder}-{n}",
                name="mentorship.rebuild_stats",
                args={},
                caller=seeder,
                origin="api",
                due_at=func.now() - timedelta(seconds=6 if waiting else 3),
                dispatched_at=func.now(),
                started_at=None if waiting else func.now() - timedelta(seconds=3),
                finished_at=None if waiting else func.now() - timedelta(seconds=1),
            )
        )
    db.commit()


def _quiet(db: Session, limit: float) -> bool:
    db.rollback()
    return read_backlogs(db.connection(), limit).get("maintenance", IDLE) == IDLE


# Far above the 6 s the seeded backlog's oldest task has waited.
PACE_LIMIT = "20"


def test_the_door_closes_once_what_it_admitted_would_wait_too_long_at_the_pace(
    db: Session, worker: WorkerProcess
) -> None:
    caller = unique("pace")
    seeder = unique("seeded")
    with (
        api_process(MAX_QUEUE_WAIT_SECONDS=PACE_LIMIT) as url,
        client_for(url, ["*"], sub=caller) as http,
        queue_taken_from(worker, "maintenance"),
    ):
        # Nothing of the queue waiting or finished lately but what the test seeds (an
        # earlier test's tasks finishing now would speed up the pace the door learns).
        assert poll_until(lambda: _quiet(db, float(PACE_LIMIT)), 30, 0.2)
        _seed_backlog(db, seeder)
        try:
            # The door reads the backlog every half a second.
            time.sleep(1)
            # 30 ahead at 2 a second start within 15 s: 10 more fit within 20 s. The
            # door counts what it admits at once, without waiting for its next read.
            answers: list[httpx.Response] = []
            while len(answers) < 100 and (not answers or answers[-1].status_code == 202):
                answers.append(http.post(BEHIND, json=BEHIND_ARGS))
            refused = answers[-1]
            assert refused.status_code == 429, refused.text
            assert "a task accepted now would wait about 20" in refused.json()["error"]["message"]
            assert 8 <= len(answers) - 1 <= 14, [a.status_code for a in answers]
            assert _recorded(db, caller) == len(answers) - 1
        finally:
            db.execute(delete(TaskRun).where(TaskRun.caller == seeder))
            db.commit()
    assert poll_until(lambda: _unfinished(db, caller) == 0, 60, 0.2)


def test_without_the_setting_nothing_is_refused(db: Session, worker: WorkerProcess) -> None:
    caller = unique("no-admission")
    with (
        api_process() as url,
        client_for(url, ["*"], sub=caller) as http,
        queue_taken_from(worker, "maintenance"),
    ):
        first = http.post(BEHIND, json=BEHIND_ARGS)
        assert first.status_code == 202
        assert poll_until(lambda: _waited_over(db, first.json()["task_id"], 1.5), 10, 0.1)
        assert http.post(BEHIND, json=BEHIND_ARGS).status_code == 202
    assert poll_until(lambda: _unfinished(db, caller) == 0, 60, 0.2)


def _waited_over(db: Session, task_id: str, seconds: float) -> bool:
    db.rollback()
    waited = db.scalar(
        select(func.extract("epoch", func.now() - TaskRun.due_at)).where(
            TaskRun.task_id == task_id, TaskRun.started_at.is_(None)
        )
    )
    return waited is not None and float(waited) > seconds


def test_a_queue_wait_limit_must_be_below_the_redispatch_delay() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(max_queue_wait_seconds=300, redispatch_after_seconds=300)
    message = str(refused.value)
    assert "MAX_QUEUE_WAIT_SECONDS (300) must be below REDISPATCH_AFTER_SECONDS (300)" in message
    assert Settings(max_queue_wait_seconds=2, redispatch_after_seconds=300).max_queue_wait_seconds
