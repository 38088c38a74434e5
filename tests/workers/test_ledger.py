"""The ledger's exactly-once rule on real PostgreSQL: two deliveries of one task id
running at once commit the effects of one of them."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import select

from core import task_store
from core.context import TaskContext
from core.db import get_bookkeeping_engine, session_factory
from core.task_store import TaskState
from models.users import User
from tests.factories import make_user, next_id
from tests.support import lock_waiters, wait_for
from workers.base import _record_failure_quietly


def _delivered() -> TaskContext:
    """A task id whose first delivery is counted, as the task base counts it."""
    context = TaskContext(task_id=str(uuid.uuid4()), task_name="events.publish", caller="test")
    with get_bookkeeping_engine().connect() as connection:
        task_store.begin_delivery(connection, context, {}, "test")
    return context


def _existing(*user_ids: int) -> set[int]:
    with session_factory()() as session:
        return set(session.scalars(select(User.id).where(User.id.in_(user_ids))))


def test_a_delivery_running_beside_another_rolls_its_work_back_and_answers_the_first():
    context = _delivered()
    # Each delivery's work: a user row of its own.
    first_user, second_user = next_id(), next_id()
    first_outcome = task_store.Outcome(TaskState.SUCCESS, {"delivery": 1})
    superseded: list[task_store.Superseded] = []

    def second_delivery() -> None:
        try:
            with session_factory().begin() as session:
                make_user(session, id=second_user)
                task_store.record_first_outcome(
                    session, context.task_id, task_store.Outcome(TaskState.SUCCESS, {"delivery": 2})
                )
        except task_store.Superseded as exc:
            superseded.append(exc)

    with session_factory().begin() as first:
        make_user(first, id=first_user)
        task_store.record_first_outcome(first, context.task_id, first_outcome)
        second = threading.Thread(target=second_delivery)
        second.start()
        # The second delivery's outcome waits for the first's transaction.
        wait_for(lambda: lock_waiters("%UPDATE task_runs%") == 1, what="the second delivery")
    second.join(10)

    (stood,) = superseded
    assert stood.outcome == first_outcome
    assert _existing(first_user, second_user) == {first_user}


def test_a_delivery_after_the_outcome_is_recorded_is_superseded_at_once():
    context = _delivered()
    recorded = task_store.Outcome(TaskState.SUCCESS, {"delivery": 1})
    with session_factory().begin() as session:
        task_store.record_first_outcome(session, context.task_id, recorded)

    with pytest.raises(task_store.Superseded) as raised, session_factory().begin() as session:
        task_store.record_first_outcome(
            session, context.task_id, task_store.Outcome(TaskState.SUCCESS, {"delivery": 2})
        )
    assert raised.value.outcome == recorded


def test_a_delivery_failing_beside_another_answers_the_outcome_that_stands():
    context = _delivered()
    recorded = task_store.Outcome(TaskState.SUCCESS, {"delivery": 1})
    with session_factory().begin() as session:
        task_store.record_first_outcome(session, context.task_id, recorded)

    # A bug in the second delivery does not overwrite the first one's success.
    assert _record_failure_quietly(context, RuntimeError("boom")) == recorded


def test_a_failure_with_no_outcome_standing_is_recorded():
    context = _delivered()

    assert _record_failure_quietly(context, RuntimeError("boom")) is None
    with session_factory().begin() as session, pytest.raises(task_store.Superseded) as stood:
        task_store.record_first_outcome(
            session, context.task_id, task_store.Outcome(TaskState.SUCCESS)
        )
    assert stood.value.outcome.state == TaskState.FAILURE
