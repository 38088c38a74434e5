"""Queue wait counts from when a message was sent, also for tasks the API never saw
(beat's ticks, triggers, sweep shares, a send from this app): a backlog shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from tests.api.support import client_for
from tests.factories import unique
from tests.support import queue_taken_from, send, task_finished, task_run, wait_for

BACKLOG_SECONDS = 2.0


def _sweep_wait(api_url: str) -> tuple[float, float]:
    """`matchops_task_queue_wait_seconds{task="peer.sweep"}`: its count and its sum."""
    with client_for(api_url, ["metrics:read"]) as reader:
        response = reader.get("/metrics")
    assert response.status_code == 200, response.text
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name.startswith("matchops_task_queue_wait_seconds")
        and sample.labels.get("task") == "peer.sweep"
    }
    return (
        values.get("matchops_task_queue_wait_seconds_count", 0.0),
        values.get("matchops_task_queue_wait_seconds_sum", 0.0),
    )


def test_a_backlog_of_sweeps_shows_in_the_queue_wait_histogram(worker, api_url: str):
    count_before, sum_before = _sweep_wait(api_url)
    with queue_taken_from(worker, "sweeps"):
        sent = [send("peer.sweep", difficulty="Easy", topic=unique("backlog")) for _ in range(3)]
        # Nobody consumes `sweeps` meanwhile: the sweeps wait in the broker.
        time.sleep(BACKLOG_SECONDS)
    wait_for(lambda: all(task_finished(s.id) for s in sent), what="the backlog to drain")

    for result in sent:
        run = task_run(result.id)
        assert run.origin == "send_task"
        assert (run.started_at - run.due_at).total_seconds() >= BACKLOG_SECONDS
    count_after, sum_after = _sweep_wait(api_url)
    assert count_after - count_before == len(sent)
    assert sum_after - sum_before >= len(sent) * BACKLOG_SECONDS


# A sibling's own app in an interpreter of its own, where nothing of matchops is loaded
# (no publish signal of this app stamps its messages): it sends with a countdown.
BARE_APP_WITH_COUNTDOWN = """
import json, os, sys
from celery import Celery

app = Celery(broker=os.environ["BROKER_URL"])
print(app.send_task(sys.argv[1], kwargs=json.loads(sys.argv[2]), countdown=1).id)
"""


def test_a_bare_sibling_s_countdown_counts_from_when_it_was_due(worker, tmp_path):
    # The sibling sets no send time; its countdown's ETA is the one time the message
    # carries. Waiting for the ETA is not queue wait; waiting after it is.
    kwargs = {"difficulty": "Hard", "topic": unique("eta")}
    sent_at = datetime.now(UTC)
    with queue_taken_from(worker, "celery"):
        done = subprocess.run(
            [sys.executable, "-I", "-c", BARE_APP_WITH_COUNTDOWN, "peer.sweep", json.dumps(kwargs)],
            cwd=tmp_path,
            env={"BROKER_URL": os.environ["BROKER_URL"], "PATH": os.environ.get("PATH", "")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        time.sleep(1 + BACKLOG_SECONDS)
    task_id = done.stdout.strip()
    wait_for(lambda: task_finished(task_id), timeout=60, what="the sibling's sweep")
    run = task_run(task_id)
    assert run.due_at - sent_at >= timedelta(seconds=1)
    assert run.started_at - run.due_at >= timedelta(seconds=BACKLOG_SECONDS)
