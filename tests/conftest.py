"""Session fixtures: a fresh schema, a real Celery worker, a database session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from core.db import session_factory
from core.settings import get_settings
from runtime.migrate import recreate_schema, upgrade_head
from tests.support import WorkerProcess
from workers.app import app


@pytest.fixture(scope="session", autouse=True)
def database() -> str:
    """The test database, emptied and migrated to head once per run."""
    url = get_settings().db_url
    recreate_schema(url)
    upgrade_head(url)
    return url


@pytest.fixture(scope="session")
def worker(database: str) -> Iterator[WorkerProcess]:
    """One real prefork worker (2 processes) consuming every queue."""
    app.control.purge()
    process = WorkerProcess("main")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
def db() -> Iterator[Session]:
    """A session for seeding and checking rows; call `db.commit()` before running tasks."""
    session = session_factory()()
    try:
        yield session
    finally:
        session.rollback()
        session.close()
