"""The one after-commit mechanism: what a transaction leaves for after its commit runs
once it has committed, in order, and never after a rollback."""

from __future__ import annotations

from sqlalchemy import text

from core.db import session_factory
from core.followups import after_commit


def test_actions_run_in_order_after_commit_and_never_after_a_rollback(db):
    ran: list[str] = []
    with session_factory()() as session:
        session.execute(text("SELECT 1"))
        after_commit(session, lambda: ran.append("rolled back"))
        session.rollback()
        session.execute(text("SELECT 1"))
        after_commit(session, lambda: ran.append("first"))
        after_commit(session, lambda: ran.append("second"))
        # Nothing runs while the transaction is open.
        assert ran == []
        session.commit()
    assert ran == ["first", "second"]
