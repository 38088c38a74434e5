"""Supervised loops: an unexpected error raised inside each of them (the API's broker
watch and intake writer, a worker's dispatcher and event flusher) is survived, shows in
`/readyz` while the loop waits to restart and in `matchops_thread_restarts_total`, and
the loop works again afterwards."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.supervision import (
    BROKER_WATCH,
    DISPATCHER,
    EVENT_FLUSHER,
    INJECT_ENV,
    INTAKE_WRITER,
    inject_fault,
)
from tests.api.support import client_for
from tests.factories import next_id
from tests.support import WorkerProcess, send, wait_for, worker_taking_over
from workers.app import app


@pytest.fixture
def operator(api_url: str) -> Iterator[httpx.Client]:
    """A client that may read metrics and enqueue any task."""
    with client_for(api_url, ["metrics:read", "*"]) as http:
        yield http


def restarts(http: httpx.Client, thread: str) -> float:
    """`matchops_thread_restarts_total{thread}` as scraped now."""
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if (
                sample.name == "matchops_thread_restarts_total"
                and sample.labels["thread"] == thread
            ):
                return sample.value
    raise AssertionError(f"no restart counter for {thread}")


class ReadinessWatch:
    """Polls `/readyz` in the background and keeps every part it named as down: this
    process's in a 503's message, another process's under `elsewhere` (with a 200)."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http
        self.refusals: list[str] = []
        self.elsewhere: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ReadinessWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._thread.join(10)

    def _poll(self) -> None:
        while not self._stopping.wait(0.05):
            response = self._http.get("/readyz")
            body = response.json()
            if response.status_code == 503:
                self.refusals.append(body["error"]["message"])
            self.elsewhere.extend(
                f"{where.partition('@')[0]} {why}" for where, why in body["elsewhere"].items()
            )

    def named(self, part: str) -> bool:
        """Whether a 503 named `part` of this API as restarting."""
        return any(f"{part} restarting after InjectedFault" in text for text in self.refusals)

    def named_elsewhere(self, part: str) -> bool:
        """Whether a ready answer named `part` of another process as restarting."""
        return f"{part} restarting after InjectedFault" in self.elsewhere


def ready(http: httpx.Client) -> bool:
    """Whether `/readyz` answers 200."""
    return http.get("/readyz").status_code == 200


def test_the_broker_watch_survives_an_unexpected_error(operator: httpx.Client):
    before = restarts(operator, BROKER_WATCH)
    with ReadinessWatch(operator) as readiness:
        # Raised inside the watch's loop on its next three rounds (one every 2 s).
        inject_fault(BROKER_WATCH, 3)
        wait_for(
            lambda: restarts(operator, BROKER_WATCH) >= before + 3,
            timeout=30,
            what="three restarts of the broker watch",
        )
    assert readiness.named(BROKER_WATCH), readiness.refusals
    wait_for(lambda: ready(operator), timeout=10, what="ready again")
    # It still goes round: one more fault is met, and survived, within a round or two.
    inject_fault(BROKER_WATCH)
    wait_for(
        lambda: restarts(operator, BROKER_WATCH) == before + 4,
        timeout=10,
        what="the watch to go round again",
    )


def test_the_intake_writer_survives_an_unexpected_error(
    worker: WorkerProcess, operator: httpx.Client
):
    before = restarts(operator, INTAKE_WRITER)
    with ReadinessWatch(operator) as readiness:
        # Raised as the writer wakes for this enqueue: the task waits parked meanwhile.
        inject_fault(INTAKE_WRITER)
        first = operator.post(
            "/v1/tasks/mentorship.rank", json={"args": {"mentee_id": next_id()}, "wait": 20}
        )
    assert first.status_code == 200, first.text
    assert readiness.named(INTAKE_WRITER), readiness.refusals
    assert restarts(operator, INTAKE_WRITER) == before + 1
    # And it records the next one as any other.
    second = operator.post(
        "/v1/tasks/mentorship.rank", json={"args": {"mentee_id": next_id()}, "wait": 20}
    )
    assert second.status_code == 200, second.text
    assert ready(operator)


class SucceededEvents:
    """Listens for `task-succeeded` events in the background; `ready` is set once its
    queue is bound, so no event sent afterwards is missed."""

    def __init__(self, timeout: float) -> None:
        self.ready = threading.Event()
        self.seen: set[str] = set()
        self._timeout = timeout
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def __enter__(self) -> SucceededEvents:
        self._thread.start()
        assert self.ready.wait(30), "the event receiver did not start"
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join(self._timeout + 5)

    def _listen(self) -> None:
        with app.connection_for_read() as connection:
            receiver = app.events.Receiver(
                connection,
                handlers={"task-succeeded": lambda event: self.seen.add(str(event["uuid"]))},
            )
            receiver.on_consume_ready = lambda *_args, **_kw: self.ready.set()
            # It ends once no event came for `timeout` seconds.
            with contextlib.suppress(TimeoutError):
                receiver.capture(limit=None, timeout=self._timeout, wakeup=False)


def test_a_workers_dispatcher_and_event_flusher_survive_unexpected_errors(
    worker: WorkerProcess, operator: httpx.Client
):
    before = {part: restarts(operator, part) for part in (DISPATCHER, EVENT_FLUSHER)}
    # Five faults of the dispatcher back off about 4-8 s in all: long enough to see.
    env = {INJECT_ENV: f"{DISPATCHER}:5,{EVENT_FLUSHER}:2"}
    with (
        ReadinessWatch(operator) as readiness,
        worker_taking_over(worker, "maintenance", "supervised", env) as supervised,
    ):
        wait_for(
            lambda: restarts(operator, DISPATCHER) >= before[DISPATCHER] + 5,
            timeout=60,
            what="five restarts of the dispatcher",
        )
        # Task events of this worker meet the flusher's faults, then go out.
        for _ in range(2):
            send("mentorship.rebuild_stats").get(timeout=60)
        wait_for(
            lambda: restarts(operator, EVENT_FLUSHER) >= before[EVENT_FLUSHER] + 2,
            timeout=30,
            what="two restarts of the event flusher",
        )
        # Afterwards the worker's events go out again.
        task_id = str(uuid.uuid4())
        with SucceededEvents(timeout=5) as events:
            app.send_task("mentorship.rebuild_stats", task_id=task_id).get(timeout=60)
        log = supervised.log_path.read_text(errors="replace")
    # A worker's loop is named, but the API stays ready: it records tasks all the same.
    assert readiness.named_elsewhere(DISPATCHER), readiness.elsewhere
    assert not readiness.refusals
    assert task_id in events.seen
    assert "dispatcher stopped by an unexpected error" in log
    assert "Traceback" in log and "InjectedFault: fault injected into event-flusher" in log
    wait_for(lambda: ready(operator), timeout=15, what="ready again")
