"""The platform as a sibling service sees it: enqueue, task states, idempotency, refusals."""

from __future__ import annotations

import time
import uuid
from typing import Any

from demo.client import TERMINAL_STATES, ApiClient
from demo.steps import expect


def watch_states(client: ApiClient, task_id: str, timeout: float = 30) -> list[str]:
    """The distinct states `GET /v1/tasks/{id}` reports, in order, until a final one."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = str(client.status(task_id)["state"])
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in TERMINAL_STATES:
            break
        time.sleep(0.02)
    return seen


def run(client: ApiClient) -> dict[str, Any]:
    """Walk through the HTTP API's behaviours; raise on the first surprise."""
    names = sorted(task["name"] for task in client.tasks())
    expect("maintenance.reconcile" in names, "GET /v1/tasks lists the tasks", tasks=names)

    task_id = client.enqueue("maintenance.reconcile")
    states = watch_states(client, task_id)
    expect(states[-1:] == ["SUCCESS"], "maintenance.reconcile succeeds", states=states)
    reconciled = client.status(task_id).get("result")

    # The same idempotency key, task and args: one task, enqueued once.
    key = f"demo-{uuid.uuid4().hex}"
    first_status, first = client.submit("events.publish", {"args": {}, "idempotency_key": key})
    again_status, again = client.submit("events.publish", {"args": {}, "idempotency_key": key})
    expect(
        first_status == again_status == 202 and first["task_id"] == again["task_id"],
        "a re-posted idempotency key returns the first task",
        first=first,
        again=again,
    )

    # The same key for another task is a conflict, and args outside the schema are refused.
    conflict_status, conflict = client.submit(
        "maintenance.reconcile", {"args": {}, "idempotency_key": key}
    )
    expect(conflict_status == 409, "a reused key with another task is a 409", got=conflict)
    rejected_status, rejected = client.submit("maintenance.reconcile", {"args": {"dry_run": 1}})
    expect(rejected_status == 422, "an unknown argument is a 422", got=rejected)
    unknown_status, unknown = client.submit("peer.teleport", {"args": {}})
    expect(unknown_status == 404, "an unknown task is a 404", got=unknown)

    relayed = client.call("events.publish", {}, wait=10)
    expect(relayed["state"] == "SUCCESS", "the relay runs", answer=relayed)
    return {
        "tasks in the catalogue": len(names),
        "maintenance.reconcile states": states,
        "maintenance.reconcile result": reconciled,
        "idempotent re-post": {"key": key, "task_id": first["task_id"], "same_task": True},
        "rejected (409)": conflict["error"],
        "rejected (422)": rejected["error"],
        "rejected (404)": unknown["error"],
        "events.publish result": relayed.get("result"),
    }
