"""Helpers of the API tests: tokens, clients, servers in a thread or a subprocess."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from api.auth import issue_token
from runtime.embedded import free_port
from tests.factories import unique
from tests.support import ROOT
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
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@contextmanager
def api_process(**env: str) -> Iterator[str]:
    """`uvicorn --factory api.app:create_app` as a subprocess with `env` overrides."""
    port = free_port()
    process = subprocess.Popen(
        [
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
        ],
        cwd=ROOT,
        env={**os.environ, "AUTH_SECRET": SECRET, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                raise RuntimeError(f"the API exited during start-up:\n{output}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout:
            process.stdout.close()


def wait_until_final(http: httpx.Client, task_id: str, timeout: float = 30) -> dict[str, Any]:
    """Poll `GET /v1/tasks/{id}` until SUCCESS or FAILURE."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/v1/tasks/{task_id}")
        if response.status_code == 200 and response.json()["state"] in {"SUCCESS", "FAILURE"}:
            body: dict[str, Any] = response.json()
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} not final after {timeout}s: {response.text}")
        time.sleep(0.05)


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
                deadline = time.monotonic() + 20
                while not listening.wait(0.1):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the event receiver did not start listening")
                    dispatcher.send("task-probe", uuid=probe)
            yield events
        finally:
            receiver.should_stop = True
            thread.join(10)
