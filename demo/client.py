"""A small client of the matchops HTTP API, as a sibling service would use it."""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL_STATES = {"SUCCESS", "FAILURE"}


class ApiCallError(RuntimeError):
    """The API refused a call: its status and `{"error": {"type", "message"}}` body."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status} {error.get('type', '')}: {error.get('message', body)}")
        self.status = status
        self.body = body


class ApiClient:
    """Enqueues tasks through `POST /v1/tasks/{name}` and reads their answers."""

    def __init__(self, base_url: str, token: str, timeout: float = 40.0) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def submit(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST a raw body; returns (HTTP status, JSON answer) without raising."""
        response = self._http.post(f"/v1/tasks/{name}", json=body)
        return response.status_code, response.json()

    def enqueue(self, name: str, args: dict[str, Any] | None = None, **options: Any) -> str:
        """Enqueue without waiting; returns the task id."""
        answer = self._checked(self.submit(name, {"args": args or {}, **options}))
        return str(answer["task_id"])

    def call(
        self, name: str, args: dict[str, Any] | None = None, wait: float = 30
    ) -> dict[str, Any]:
        """Enqueue and wait for the final answer (`state`, `result` or `error`)."""
        answer: dict[str, Any] = self._checked(
            self.submit(name, {"args": args or {}, "wait": min(wait, 30)})
        )
        if answer["state"] in TERMINAL_STATES:
            return answer
        return self.wait(answer["task_id"], wait)

    def status(self, task_id: str) -> dict[str, Any]:
        """`GET /v1/tasks/{task_id}`."""
        response = self._http.get(f"/v1/tasks/{task_id}")
        answer: dict[str, Any] = self._checked((response.status_code, response.json()))
        return answer

    def tasks(self) -> list[dict[str, Any]]:
        """`GET /v1/tasks`: the catalogue of enqueueable tasks."""
        response = self._http.get("/v1/tasks")
        answer: Any = self._checked((response.status_code, response.json()))
        return list(answer)

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

    @staticmethod
    def _checked(reply: tuple[int, Any]) -> Any:
        status, body = reply
        if status >= 400:
            raise ApiCallError(status, body)
        return body
