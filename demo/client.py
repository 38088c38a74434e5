"""A small client of the matchops HTTP API, as a sibling service would use it."""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL_STATES = {"SUCCESS", "FAILURE"}


class ApiClient:
    """Enqueues tasks through `POST /v1/tasks/{name}` and reads their answers."""

    def __init__(self, base_url: str, token: str, timeout: float = 40.0) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def enqueue(self, name: str, args: dict[str, Any] | None = None, **options: Any) -> str:
        """Enqueue without waiting; returns the task id."""
        response = self._http.post(f"/v1/tasks/{name}", json={"args": args or {}, **options})
        response.raise_for_status()
        return str(response.json()["task_id"])

    def call(
        self, name: str, args: dict[str, Any] | None = None, wait: float = 30
    ) -> dict[str, Any]:
        """Enqueue and wait for the final answer (`state`, `result` or `error`)."""
        response = self._http.post(f"/v1/tasks/{name}", json={"args": args or {}, "wait": wait})
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        if answer["state"] in TERMINAL_STATES:
            return answer
        return self.wait(answer["task_id"], wait)

    def status(self, task_id: str) -> dict[str, Any]:
        """`GET /v1/tasks/{task_id}`."""
        response = self._http.get(f"/v1/tasks/{task_id}")
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def wait(self, task_id: str, seconds: float = 30) -> dict[str, Any]:
        """Poll until the task finishes or `seconds` pass; returns the last answer."""
        deadline = time.monotonic() + seconds
        while True:
            answer = self.status(task_id)
            if answer["state"] in TERMINAL_STATES or time.monotonic() > deadline:
                return answer
            time.sleep(0.1)

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()
