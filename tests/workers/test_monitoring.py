"""What Flower shows: the task events of a real worker, folded by Celery's event state
(the same `State` Flower keeps)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.events.state import State

from tests.factories import next_id
from tests.support import send, wait_for
from workers.app import app, load_tasks
from workers.monitoring import announce_progress


@contextmanager
def flower_view() -> Iterator[State]:
    """Celery's event state, fed by a receiver in a thread for the duration of the block."""
    state = app.events.State()
    ready = threading.Event()
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": state.event})
        announce_ready = receiver.on_consume_ready

        def on_consume_ready(*args: Any, **kwargs: Any) -> None:
            announce_ready(*args, **kwargs)
            ready.set()

        receiver.on_consume_ready = on_consume_ready
        thread = threading.Thread(target=receiver.capture, kwargs={"wakeup": False}, daemon=True)
        thread.start()
        assert ready.wait(10), "the event receiver did not start"
        try:
            yield state
        finally:
            receiver.should_stop = True
            thread.join(10)


def test_a_domain_refusal_shows_its_type_and_status_without_a_traceback(worker):
    with flower_view() as state:
        result = send("mentorship.rank", mentee_id=next_id())
        wait_for(
            lambda: (task := state.tasks.get(result.id)) is not None and task.state == "FAILURE",
            what="the task-failed event",
        )
        task = state.tasks[result.id]
    assert task.exception == "NotFound('Mentee not found', status=404)"
    assert task.traceback == "NotFound (HTTP 404): Mentee not found"


def test_progress_events_show_as_state_progress_with_the_figures(worker):
    load_tasks()
    task = app.tasks["carpool.group_deleted"]
    task_id = str(uuid.uuid4())
    with flower_view() as state:
        task.push_request(id=task_id, hostname="monitoring-test@matchops-tests")
        try:
            # Reported again and again, as a long task does after every batch: the
            # receiver may see the broker's binding only after the first reports.
            def reported() -> bool:
                announce_progress(task, {"done": 500, "total": 2000})
                return task_id in state.tasks

            wait_for(reported, what="a task-progress event")
        finally:
            task.pop_request()
        seen = state.tasks[task_id]
    assert seen.state == "PROGRESS"
    assert seen.result == '{"progress": {"done": 500, "total": 2000}}'
