"""Session fixtures: a fresh schema, a real Celery worker, a database session.

With DATABASE_URL / BROKER_URL unset, the session owns embedded PostgreSQL and Redis of
its own, in `.matchops/test` (apart from a running `make run`'s), from `pytest_configure`
to `pytest_unconfigure`. A fixture would be too late: the settings are read once from
the environment, and test modules, collected before any fixture runs, may read them
when imported; `pytest_configure` runs before collection, and nothing has read the
settings by then (exporting after that is refused, see runtime.embedded). The
environment is also how the session's worker and API subprocesses get the URLs.
"""

from __future__ import annotations

import contextlib
import os
import uuid

# Most tests run tasks one at a time and send the sweeps they check themselves; a sweep
# triggered by a commit would race those. The trigger tests switch them on for workers
# of their own.
os.environ.setdefault("COMMIT_TRIGGERS", "false")

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session
from xdist.remote import Producer

from core.db import session_factory
from core.settings import get_settings
from runtime import embedded
from runtime.migrate import recreate_schema, refuse_unless_scratch, upgrade_head
from tests import isolation
from tests.support import WorkerProcess
from workers.app import app

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


_embedded_servers = contextlib.ExitStack()


def pytest_configure(config: pytest.Config) -> None:
    """The rabbitmq marker; embedded servers where DATABASE_URL / BROKER_URL are unset;
    and stop the run once, before any test, when DATABASE_URL is not a scratch database."""
    config.addinivalue_line("markers", "rabbitmq: needs the RabbitMQ named by RABBITMQ_URL")
    try:
        if not hasattr(config, "workerinput"):
            # The run's own servers; with pytest-xdist, this is the controlling process,
            # and its workers, started after this, inherit the URLs. A second test run
            # beside this one would rebuild the schema under it: refused.
            _embedded_servers.enter_context(
                embedded.serving("matchops_test", embedded.DEFAULT_HOME / "test", share=False)
            )
        else:
            # An xdist worker's own database and Redis db (`tests.isolation`).
            isolation.own_share(config.workerinput["workerid"])
        refuse_unless_scratch(get_settings().db_url)
    except RuntimeError as refusal:
        _embedded_servers.close()
        raise pytest.UsageError(str(refusal)) from None


def pytest_unconfigure() -> None:
    """Stop the embedded servers this session started."""
    _embedded_servers.close()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(
    config: pytest.Config, log: Producer
) -> isolation.SharedVhostTogether | None:
    """With `-n` and the default distribution, the RabbitMQ tests stay in one process."""
    if config.getvalue("dist") != "load":
        return None
    return isolation.SharedVhostTogether(config, log)


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
