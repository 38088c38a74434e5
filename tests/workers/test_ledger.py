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
from models.platform import TaskRun
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


# A first delivery counts itself with its outcome (core.task_store, step 4d) ------------


def _first(caller: str = "test") -> tuple[TaskContext, task_store.FirstDelivery]:
    context = TaskContext(task_id=str(uuid.uuid4()), task_name="events.publish", caller=caller)
    return context, task_store.FirstDelivery(args={}, origin=caller, due=None)


def _run(task_id: str) -> tuple[int, str, str | None, object]:
    with get_bookkeeping_engine().connect() as connection:
        row = connection.execute(
            select(TaskRun.deliveries, TaskRun.state, TaskRun.caller, TaskRun.result).where(
                TaskRun.task_id == task_id
            )
        ).one()
    return row.deliveries, row.state, row.caller, row.result


def test_a_first_delivery_makes_its_row_counted_with_its_outcome_in_its_work_transaction():
    context, first = _first()
    user = next_id()
    with session_factory().begin() as session:
        make_user(session, id=user)
        task_store.finish_first_delivery(
            session, context, first, task_store.Outcome(TaskState.SUCCESS, {"user": user})
        )
        # Nothing of the task shows before its work commits.
        with get_bookkeeping_engine().connect() as connection:
            assert task_store.task_status(connection, context.task_id) is None

    assert _run(context.task_id) == (1, "SUCCESS", "test", {"user": user})
    assert _existing(user) == {user}


def test_a_first_delivery_of_a_finished_task_is_not_first_and_its_work_rolls_back():
    context, first = _first()
    recorded = task_store.Outcome(TaskState.SUCCESS, {"delivery": 1})
    with session_factory().begin() as session:
        task_store.finish_first_delivery(session, context, first, recorded)
    user = next_id()

    with pytest.raises(task_store.NotFirst), session_factory().begin() as session:
        make_user(session, id=user)
        task_store.finish_first_delivery(
            session, context, first, task_store.Outcome(TaskState.SUCCESS, {"delivery": 2})
        )

    assert _run(context.task_id) == (1, "SUCCESS", "test", {"delivery": 1})
    assert _existing(user) == set()


def test_a_first_delivery_that_ran_for_another_caller_than_the_recorded_one_is_not_first():
    # The API recorded the task for its token's subject; a sibling sent the same id.
    recorded, _ = _first(caller="mentoring-app")
    with get_bookkeeping_engine().connect() as connection:
        task_store.begin_delivery(connection, recorded, {}, "api")
    context = TaskContext(recorded.task_id, recorded.task_name, "send_task")
    first = task_store.FirstDelivery(args={}, origin="send_task", due=None)

    with pytest.raises(task_store.NotFirst), session_factory().begin() as session:
        task_store.finish_first_delivery(
            session, context, first, task_store.Outcome(TaskState.SUCCESS, {})
        )

    assert _run(context.task_id) == (1, "STARTED", "mentoring-app", None)


def test_a_killed_first_delivery_gets_its_row_with_its_failure():
    context, _ = _first(caller="send_task")
    killed = task_store.Outcome(TaskState.FAILURE, error={"type": "TimeLimitExceeded"})
    with get_bookkeeping_engine().connect() as connection:
        assert task_store.record_killed(connection, context, {"limit": 1}, killed)
        # A second record finds the outcome standing and writes nothing.
        assert not task_store.record_killed(connection, context, {"limit": 1}, killed)

    assert _run(context.task_id) == (1, "FAILURE", "send_task", None)
