"""Embedded PostgreSQL and Redis: real servers started in a temporary folder.

An "owner" is a separate Python process that starts the servers and keeps them until
told to exit, as `make run` does; one-shot commands are the real `matchops` command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from runtime import embedded
from runtime.polling import poll_until
from tests.runtime.commands import matchops
from tests.support import ROOT

URLS = ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND")

OWNER = """
import json, os, sys
from runtime import embedded
with embedded.serving() as servers:
    urls = {name: os.environ[name] for name in ("DATABASE_URL", "BROKER_URL")}
    print(json.dumps({**urls, "shared": servers.shared}), flush=True)
    sys.stdin.readline()
"""


class Owner:
    """A process using the embedded servers under `home` until `close()`: it starts
    them unless they run already."""

    def __init__(self, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in URLS}
        env["MATCHOPS_HOME"] = str(home)
        self.process = subprocess.Popen(
            [sys.executable, "-c", OWNER],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"owner exited with {self.process.wait()}"
        answer = json.loads(line)
        self.database_url: str = answer["DATABASE_URL"]
        self.broker_url: str = answer["BROKER_URL"]
        self.shared: bool = answer["shared"]

    def close(self) -> None:
        """Let the process leave `serving()` and exit normally."""
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.close()
        assert self.process.wait(60) == 0

    def kill(self) -> None:
        """SIGKILL: the process cannot clean up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def one_shot(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`matchops ARGS` with no server URLs, as on a machine without servers."""
    return matchops(*args, env={"MATCHOPS_HOME": str(home)}, unset=URLS)


@pytest.fixture(scope="module")
def module_home():
    # Not under pytest's tmp_path: each pytest run on the machine makes its parent 0700
    # again, which shuts out PostgreSQL's own user (as root) in the middle of a start.
    # One for the module: the data folder is initialised once.
    folder = Path(tempfile.mkdtemp(prefix="matchops-home-"))
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def home(module_home):
    """The home of a test's servers, with nothing running there at its start."""
    yield module_home
    # A failed test must not leave servers behind.
    embedded.stop_running(module_home)


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


def answering(owner: Owner) -> bool:
    """Both servers answer at the URLs the owner exported."""
    return database_answers(owner.database_url) and redis_answers(owner.broker_url)


def gone(home: Path, owner: Owner) -> bool:
    """Neither server answers, and both have cleaned up after themselves."""
    return (
        not database_answers(owner.database_url)
        and not redis_answers(owner.broker_url)
        and not (home / "postgres" / "postmaster.pid").exists()
        and not (home / "redis.sock").exists()
    )


def test_the_owner_stops_its_servers_one_shot_commands_and_guests_leave_them(home):
    owner = Owner(home)
    assert not owner.shared
    assert owner.database_url.startswith("postgresql+psycopg://postgres@/matchops?host=")
    assert owner.broker_url.startswith("redis://127.0.0.1:")
    assert answering(owner)
    if os.geteuid() == 0:
        # As root, PostgreSQL runs as a system user of its own.
        assert (home / "postgres").owner() == "embedded_postgres"

    # One-shot commands use the running servers, and leave them running.
    migrated = one_shot(home, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "at head" in migrated.stdout
    pools = one_shot(home, "pools", "--json")
    assert pools.returncode == 0, pools.stderr
    assert json.loads(pools.stdout) == []

    # A second process finds them running and uses them without stopping them.
    guest = Owner(home)
    assert guest.shared
    assert (guest.database_url, guest.broker_url) == (owner.database_url, owner.broker_url)
    guest.close()
    assert answering(owner)

    # The owner stops them when it exits.
    owner.close()
    assert gone(home, owner)


def test_a_killed_owner_leaves_nothing_running_and_the_next_start_is_clean(home):
    killed = Owner(home)
    killed.kill()
    # The servers get their stop signal from the system when their owner dies.
    assert poll_until(lambda: gone(home, killed), 30), "the servers outlived their killed owner"

    after = Owner(home)
    assert not after.shared
    assert answering(after)
    after.close()
    assert gone(home, after)


def test_run_refuses_servers_another_process_owns(home):
    owner = Owner(home)
    done = one_shot(home, "run", "--api-port", "0", "--flower-port", "0")
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"embedded servers already run under {home.resolve()}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (home / "run.pid").exists()
    # Refusing them did not stop them.
    assert answering(owner)
    owner.close()


@pytest.mark.parametrize(
    "command",
    [
        ("enqueue", "events.publish"),
        ("status", str(uuid.uuid4())),
        ("audit", str(uuid.uuid4())),
        ("pools",),
        ("migrate",),
    ],
    ids=lambda command: command[0],
)
def test_a_one_shot_command_without_servers_says_how_to_start_them(tmp_path, command):
    done = one_shot(tmp_path, *command)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"no embedded servers run under {tmp_path}" in done.stderr
    assert "Start the servers with `make run`" in done.stderr
    assert "or set DATABASE_URL and BROKER_URL" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir()), "a one-shot command started something"


def test_matchops_stop_stops_servers_that_no_stack_owns(home):
    owner = Owner(home)
    done = one_shot(home, "stop")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no `matchops run` or `matchops demo` is running" in done.stdout
    assert "stopped the embedded servers still running" in done.stdout
    assert gone(home, owner)
    # Its owner exits normally all the same.
    owner.close()


def test_nothing_starts_when_both_urls_are_set(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://db.example/matchops")
    monkeypatch.setenv("BROKER_URL", "redis://broker.example:6379/0")
    with embedded.serving(home=tmp_path) as servers:
        assert servers is None
    assert embedded.attach(tmp_path) is None
    assert not any(tmp_path.iterdir())
