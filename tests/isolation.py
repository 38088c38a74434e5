"""A share of the test run per pytest-xdist worker: a database and a Redis db of its own.

`make test` runs the suite in several processes (pytest-xdist). Each process starts a
Celery worker of its own, so each needs its own queues and its own rows: a task one
process sends must never reach another's worker, which would run it against the wrong
database. The RabbitMQ tests share the run's one vhost, and the multi-host tests one
deployment of their own, so each file of them runs in one process
(`SharedVhostTogether`). Without xdist nothing changes.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url
from xdist.scheduler.loadscope import LoadScopeScheduling

from core.settings import export_environment

REDIS_DATABASES = 16
# Test files whose tests run in one process, one after the other.
# The multi-host tests share one deployment of namespaces and servers, built once.
TOGETHER = ("tests/workers/test_rabbitmq.py", "tests/hosts/test_hosts.py")


def own_share(worker_id: str) -> None:
    """Point DATABASE_URL, BROKER_URL and RESULT_BACKEND, those set, at the share of the
    xdist worker `worker_id` ("gw0", "gw1", …).

    The database gets the worker's suffix (`matchops_test_gw1`); a Redis URL's db number
    becomes the URL's db number plus the worker's index.
    """
    index = int(worker_id.removeprefix("gw"))
    values: dict[str, str] = {}
    if database_url := os.environ.get("DATABASE_URL"):
        url = make_url(database_url)
        values["DATABASE_URL"] = url.set(database=f"{url.database}_{worker_id}").render_as_string(
            hide_password=False
        )
    for name in ("BROKER_URL", "RESULT_BACKEND"):
        if value := os.environ.get(name):
            values[name] = _shifted(name, value, worker_id, index)
    export_environment(values, "this test process took its share")


def _shifted(name: str, value: str, worker_id: str, index: int) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss"):
        raise RuntimeError(
            f"{name} is {parts.scheme}://: the suite runs in parallel only on Redis, whose "
            f"numbered databases keep the workers apart; run it with `pytest -p no:xdist` "
            f"or point {name} at Redis"
        )
    db = int(parts.path.strip("/") or 0) + index
    if db >= REDIS_DATABASES:
        raise RuntimeError(
            f"{name} {value}: worker {worker_id} would need Redis db {db}, past the last "
            f"({REDIS_DATABASES - 1}); use a lower db number or fewer workers (-n)"
        )
    return urlunsplit(parts._replace(path=f"/{db}"))


class SharedVhostTogether(LoadScopeScheduling):  # type: ignore[misc]  # xdist ships no types
    """Every test is a unit of its own, sent to whichever process is free, but each
    TOGETHER file is one unit.

    `--dist loadgroup` says this with marks, but it relies on renaming node ids during
    collection, which pytest 9.2 no longer takes into account (pytest-xdist #1386): the
    marked tests were spread over every process.
    """

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return path if path in TOGETHER else nodeid
