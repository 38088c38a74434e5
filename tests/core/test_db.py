"""The bookkeeping transaction on real PostgreSQL: one transaction that commits without
waiting for the disk, and connections that go back to autocommit after it."""

from __future__ import annotations

import uuid
from contextlib import ExitStack

import pytest
from sqlalchemy import Connection, QueuePool, func, insert, select, text

from core.db import bookkeeping_transaction, get_bookkeeping_engine
from models.platform import TaskRun


def _mark(connection: Connection, mark: str) -> None:
    # A finished task of its own name: no dispatcher, worker or count of ours takes it.
    connection.execute(
        insert(TaskRun).values(
            task_id=mark,
            name="test.bookkeeping",
            args={},
            caller="test",
            origin="test",
            state="SUCCESS",
            dispatched_at=func.now(),
            finished_at=func.now(),
        )
    )


def _marked(mark: str) -> bool:
    with get_bookkeeping_engine().connect() as connection:
        found = connection.scalar(select(func.count()).where(TaskRun.task_id == mark))
        return found == 1


def test_a_bookkeeping_transaction_commits_without_waiting_for_the_disk():
    mark = uuid.uuid4().hex
    with bookkeeping_transaction() as connection:
        _mark(connection, mark)
        assert connection.scalar(text("SHOW synchronous_commit")) == "off"
        # Inside one transaction: its rows are not yet visible to another connection.
        assert not _marked(mark)
    assert _marked(mark)


def test_a_bookkeeping_transaction_rolls_back_when_its_block_raises():
    mark = uuid.uuid4().hex
    with pytest.raises(RuntimeError), bookkeeping_transaction() as connection:
        _mark(connection, mark)
        raise RuntimeError("the publish after the mark failed")
    assert not _marked(mark)


def test_bookkeeping_connections_are_in_autocommit_again_after_a_transaction():
    # Transactions side by side, so every connection the pool keeps has held one.
    pool = get_bookkeeping_engine().pool
    assert isinstance(pool, QueuePool)
    with ExitStack() as transactions:
        for _ in range(pool.size()):
            _mark(transactions.enter_context(bookkeeping_transaction()), uuid.uuid4().hex)
    marks = [uuid.uuid4().hex for _ in range(3)]
    connections = [get_bookkeeping_engine().connect() for _ in marks]
    try:
        for connection, mark in zip(connections, marks, strict=True):
            _mark(connection, mark)  # committed by itself, with no commit of ours
        assert all(_marked(mark) for mark in marks)
    finally:
        for connection in connections:
            connection.close()
