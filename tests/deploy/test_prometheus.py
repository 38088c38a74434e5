"""A real Prometheus, configured from the shipped files, scrapes a running stack: its
worker stops, and the stuck-queue alert goes pending, then firing, in Prometheus's own
API; every dashboard query runs there without error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.children import Child
from runtime.embedded import free_port
from tests.deploy.support import DASHBOARDS, binary, derived_config
from tests.factories import next_id
from tests.support import TEST_LOGS, WorkerProcess, queue_taken_from, running_worker, wait_for


@pytest.fixture
def prometheus(api_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    """Prometheus on a free port with a data directory of its own, scraping the test API
    every second and evaluating the shipped rules, sped up, every second."""
    config = derived_config(tmp_path, api_url.removeprefix("http://"), interval="1s")
    port = free_port()
    server = Child(
        "prometheus",
        [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        TEST_LOGS / f"prometheus-{port}.log",
    )
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            wait_for(lambda: _ready(http, server), timeout=30, what="Prometheus to be ready")
            yield http
    finally:
        server.stop(10)


def _ready(http: httpx.Client, server: Child) -> bool:
    if not server.running():
        raise AssertionError(f"Prometheus exited:\n{server.log_tail()}")
    try:
        return http.get("/-/ready").status_code == 200
    except httpx.TransportError:
        return False


def _query(http: httpx.Client, expr: str) -> list[dict[str, Any]]:
    answer = http.get("/api/v1/query", params={"query": expr}).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _stuck_queue_states(http: httpx.Client) -> set[str]:
    alerts = http.get("/api/v1/alerts").json()["data"]["alerts"]
    return {
        alert["state"]
        for alert in alerts
        if alert["labels"]["alertname"] == "MatchopsQueueStuck"
        and alert["labels"].get("queue") == "interactive"
    }


def test_a_stopped_worker_fires_the_stuck_queue_alert(
    worker: WorkerProcess, client: httpx.Client, prometheus: httpx.Client
):
    with queue_taken_from(worker, "interactive"):
        with running_worker("watched", queues="interactive"):
            ran = client.post(
                "/v1/tasks/mentorship.rank", json={"args": {"mentee_id": next_id()}, "wait": 20}
            )
            # Answered once the task ran (an unknown mentee fails it: it ran all the same).
            assert ran.status_code == 200, ran.text
            wait_for(
                lambda: _query(prometheus, 'up{job="matchops"} == 1'),
                what="Prometheus to scrape the API",
            )
            assert not _stuck_queue_states(prometheus)
        # The worker is gone: what is enqueued now waits in the queue.
        for _ in range(3):
            accepted = client.post(
                "/v1/tasks/mentorship.rank", json={"args": {"mentee_id": next_id()}}
            )
            assert accepted.status_code == 202, accepted.text

        seen: list[str] = []

        def firing() -> bool:
            states = _stuck_queue_states(prometheus)
            seen.extend(state for state in states if state not in seen)
            return "firing" in states

        wait_for(firing, timeout=40, what="MatchopsQueueStuck to fire")
        assert seen == ["pending", "firing"], seen

        # Every query of the dashboard runs against the scraped series.
        dashboard = json.loads((DASHBOARDS / "matchops.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                _query(prometheus, target["expr"].replace("$__rate_interval", "1m"))
