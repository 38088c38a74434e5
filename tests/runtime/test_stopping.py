"""Stopping the local stack while a task runs: it says what it waits for, then waits."""

from __future__ import annotations

import threading

import pytest

from runtime.children import Child
from runtime.stack import Stack
from tests.factories_mentorship import holding_user_row, make_mentee, make_mentor
from tests.support import (
    WorkerProcess,
    lock_waiters,
    queue_taken_from,
    send,
    wait_for,
)
from workers.app import app


def test_stopping_names_the_running_task_and_lets_it_finish(
    worker: WorkerProcess, db, tmp_path, capsys: pytest.CaptureFixture[str]
):
    mentor, mentee = make_mentor(db), make_mentee(db)
    db.commit()
    stack = Stack(api_port=0, flower_port=0, mode="stopping-test")
    queue_args = ["-Q", "interactive", "-c", "1", "--without-gossip", "--without-mingle"]
    child = Child.matchops(
        "worker", ["worker", "-n", stack.worker_name, *queue_args], tmp_path / "w.log"
    )
    stack.children.append(child)
    child.start()
    printed: list[str] = []

    def said(text: str) -> bool:
        printed.append(capsys.readouterr().out)
        return text in "".join(printed)

    try:
        with queue_taken_from(worker, "interactive"):
            wait_for(
                lambda: app.control.ping(destination=[stack.worker_name], timeout=0.5),
                timeout=60,
                what="the stack's worker",
            )
            # The task waits on a row this test holds: it runs as long as the test wants.
            with holding_user_row(mentor.id):
                result = send("mentorship.select", mentee_id=mentee.id, mentor_id=mentor.id)
                wait_for(lambda: lock_waiters() >= 1, what="the task to wait on the lock")
                stopping = threading.Thread(target=stack.stop)
                stopping.start()
                wait_for(lambda: said(f"mentorship.select[{result.id}]"), what="the message")
                assert child.running(), "the worker stopped before its task finished"
            stopping.join(30)
    finally:
        child.kill_group()
    assert not stopping.is_alive()
    assert not child.running()
    assert "waiting up to 30s for the worker to finish" in "".join(printed)
    assert result.get(timeout=10)["status"] == "active"
