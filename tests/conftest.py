"""Session fixtures: a fresh schema, a real Celery worker, a database session."""

from __future__ import annotations

from runtime.embedded import ensure_servers

# Before anything reads the settings: with DATABASE_URL / BROKER_URL unset, the suite
# runs on embedded PostgreSQL and Redis (started now, or joined when `make run` already
# runs them). Database matchops_test and Redis db 1 keep it apart from that stack.
ensure_servers(database="matchops_test", redis_db=1)

import os  # noqa: E402

# Most tests run tasks one at a time and send the sweeps they check themselves; a sweep
# triggered by a commit would race those. The trigger tests switch them on for workers
# of their own.
os.environ.setdefault("COMMIT_TRIGGERS", "false")

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from core.db import session_factory  # noqa: E402
from core.settings import get_settings  # noqa: E402
from runtime.migrate import recreate_schema, upgrade_head  # noqa: E402
from tests.support import WorkerProcess  # noqa: E402
from workers.app import app  # noqa: E402


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
