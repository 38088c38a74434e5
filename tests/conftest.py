"""Session fixtures: a fresh schema, a real Celery worker, a database session."""

from __future__ import annotations

from runtime.embedded import ensure_servers
from tests import isolation

# Under pytest-xdist each worker process gets a database and a Redis db of its own, so
# no worker's Celery runs another's tasks (`tests.isolation`).
isolation.own_share()

# Before anything reads the settings: with DATABASE_URL / BROKER_URL unset, the suite
# runs on embedded PostgreSQL and Redis (started now, or joined when `make run` already
# runs them). Database matchops_test and Redis db 1 keep it apart from that stack.
ensure_servers(database=f"matchops_test{isolation.SUFFIX}", redis_db=1 + isolation.INDEX)

import os  # noqa: E402
import uuid  # noqa: E402

# Most tests run tasks one at a time and send the sweeps they check themselves; a sweep
# triggered by a commit would race those. The trigger tests switch them on for workers
# of their own.
os.environ.setdefault("COMMIT_TRIGGERS", "false")

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from core.db import session_factory  # noqa: E402
from core.settings import get_settings  # noqa: E402
from runtime.migrate import recreate_schema, refuse_unless_scratch, upgrade_head  # noqa: E402
from tests.support import WorkerProcess  # noqa: E402
from workers.app import app  # noqa: E402

# The API fixtures (a served app, clients with tokens) for every test package.
pytest_plugins = ("tests.api.fixtures",)


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


# RabbitMQ has no embedded server: its tests run where RABBITMQ_URL names one (CI does),
# and are deselected, with a line in the report header, where it is unset.
RABBITMQ_URL = os.environ.get("RABBITMQ_URL")


def pytest_configure(config: pytest.Config) -> None:
    """The rabbitmq marker; and stop the run once, before any test, when DATABASE_URL is
    not a scratch database."""
    config.addinivalue_line("markers", "rabbitmq: needs the RabbitMQ named by RABBITMQ_URL")
    # pytest-xdist's own marker, declared for runs without it (`-p no:xdist`).
    config.addinivalue_line("markers", "xdist_group(name): run in one test process")
    try:
        refuse_unless_scratch(get_settings().db_url)
    except RuntimeError as refusal:
        raise pytest.UsageError(str(refusal)) from None


def pytest_report_header() -> str:
    if RABBITMQ_URL:
        return f"rabbitmq: {RABBITMQ_URL.rsplit('@', 1)[-1]}"
    return "rabbitmq: RABBITMQ_URL unset, tests marked rabbitmq deselected"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if RABBITMQ_URL:
        return
    dropped = [item for item in items if item.get_closest_marker("rabbitmq")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker("rabbitmq")]


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """`amqp://` URL of a RabbitMQ vhost of this test run."""
    assert RABBITMQ_URL, "tests marked rabbitmq run only with RABBITMQ_URL set"
    return RABBITMQ_URL


@pytest.fixture
def rabbitmq_vhost_refused(rabbitmq_url: str) -> str:
    """The same RabbitMQ with a vhost that does not exist: the broker refuses it."""
    base = rabbitmq_url.rsplit("/", 1)[0]
    return f"{base}/matchops-missing-{uuid.uuid4().hex[:8]}"
