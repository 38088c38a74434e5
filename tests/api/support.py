"""Helpers of the API tests: tokens, clients, servers in a thread or a subprocess."""

from __future__ import annotations

import contextlib
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from fastapi import FastAPI

from api.auth import issue_token
from runtime.children import Child
from runtime.embedded import free_port
from runtime.polling import poll_until
from tests.factories import unique
from tests.support import TEST_LOGS
from workers.app import app

SECRET = "matchops-api-tests-secret-0123456789abcdef"


def token(scopes: list[str], sub: str | None = None, ttl: int = 600, secret: str = SECRET) -> str:
    """A signed token for the test secret."""
    return issue_token(secret, sub or unique("caller"), scopes, ttl)


@contextmanager
def client_for(
    url: str, scopes: list[str], sub: str | None = None, secret: str = SECRET, ttl: int = 600
) -> Iterator[httpx.Client]:
    """An HTTP client sending a token for `sub` (a fresh caller when omitted)."""
    headers = {"Authorization": f"Bearer {token(scopes, sub, ttl=ttl, secret=secret)}"}
    with httpx.Client(base_url=url, headers=headers, timeout=40) as http:
        yield http


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn in a background thread; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    poll_until(lambda: server.started or not thread.is_alive(), 20, 0.02)
    if not server.started:
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@contextmanager
def api_process(log_level: str = "warning", **env: str) -> Iterator[str]:
    """`uvicorn --factory api.app:create_app` as a subprocess with `env` overrides; its
    output goes to TEST_LOGS/api-{port}.log."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    child = Child(
        f"api-{port}",
        [
            *(sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", log_level),
        ],
        TEST_LOGS / f"api-{port}.log",
        {"AUTH_SECRET": SECRET, **env},
    )
    child.start()

    def healthy() -> bool:
        if not child.running():
            raise RuntimeError(f"the API exited during start-up:\n{child.log_tail()}")
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        return False

    try:
        if not poll_until(healthy, 60):
            raise RuntimeError("the API did not start within 60 s")
        yield url
    finally:
        child.stop(20)


def api_log(url: str) -> Path:
    """The output of the `api_process` serving `url`."""
    return TEST_LOGS / f"api-{urlsplit(url).port}.log"


def wait_until_final(http: httpx.Client, task_id: str, timeout: float = 30) -> dict[str, Any]:
    """Poll `GET /v1/tasks/{id}` until SUCCESS or FAILURE."""
    responses: list[httpx.Response] = []

    def final() -> bool:
        responses.append(http.get(f"/v1/tasks/{task_id}"))
        response = responses[-1]
        return response.status_code == 200 and response.json()["state"] in {"SUCCESS", "FAILURE"}

    if not poll_until(final, timeout, 0.05):
        raise AssertionError(f"task {task_id} not final after {timeout}s: {responses[-1].text}")
    body: dict[str, Any] = responses[-1].json()
    return body


class TaskEvents:
    """Celery task events (`task-received`, `task-succeeded`, ...) seen on the broker."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def count(self, event_type: str, task_id: str) -> int:
        """How many `event_type` events named this task id."""
        kinds = Counter(e["type"] for e in self.seen if e.get("uuid") == task_id)
        return kinds[event_type]

    def of(self, name: str, topic: str | None = None) -> list[dict[str, Any]]:
        """Received tasks called `name` (whose arguments name `topic`, when given)."""
        return [
            event
            for event in list(self.seen)
            if event["type"] == "task-received"
            and event.get("name") == name
            and (topic is None or topic in str(event.get("kwargs")))
        ]

    def done(self, name: str) -> int:
        """How many tasks called `name` have succeeded."""
        succeeded = {e.get("uuid") for e in list(self.seen) if e["type"] == "task-succeeded"}
        return sum(1 for event in self.of(name) if event["uuid"] in succeeded)


@contextmanager
def task_events() -> Iterator[TaskEvents]:
    """Capture task events in a background thread for the duration of the block.

    The worker sends `task-received` for every message it takes, so counting them per
    task id tells how many messages reached a worker.
    """
    events = TaskEvents()
    probe = uuid.uuid4().hex
    listening = threading.Event()

    def record(event: dict[str, Any]) -> None:
        if event.get("uuid") == probe:
            listening.set()
        events.seen.append(event)

    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": record})
        thread = threading.Thread(
            target=receiver.capture, kwargs={"limit": None, "wakeup": False}, daemon=True
        )
        thread.start()
        try:
            # Events are broadcast to whoever listens at that moment: wait until our
            # own probe comes back before the test sends anything.
            with app.events.default_dispatcher() as dispatcher:

                def heard_back() -> bool:
                    dispatcher.send("task-probe", uuid=probe)
                    return listening.wait(0.1)

                if not poll_until(heard_back, 20, interval=0):
                    raise RuntimeError("the event receiver did not start listening")
            yield events
        finally:
            receiver.should_stop = True
            thread.join(10)
