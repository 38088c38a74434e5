"""`matchops demo` and `matchops run` end to end: real children, real shutdown."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runtime.children import Child
from runtime.polling import poll_until
from runtime.stack import _masked
from tests.runtime.commands import MATCHOPS, matchops


def test_demo_runs_end_to_end_and_exits_0(tmp_path):
    done = matchops(
        "demo",
        "--api-port",
        "0",
        "--flower-port",
        "0",
        env={"MATCHOPS_HOME": str(tmp_path)},
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[ok] demo.platform" in done.stdout
    assert "all steps passed" in done.stdout
    assert "[events] relayed to matching.events" in done.stdout
    pools = done.stdout.split("[pools]", 1)[1]
    assert pools.splitlines()[1].split()[:3] == ["difficulty", "topic", "waiting"]


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            found |= {child} | _descendants(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class RunningStack:
    """`matchops run` in a subprocess, its home (logs, pid file) in a test folder."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.child = Child(
            "run",
            [MATCHOPS, "run", "--api-port", "0", "--flower-port", "0"],
            home / "run.log",
            {"MATCHOPS_HOME": str(home)},
        )
        self.child.start()
        self.process = self.child.process
        assert self.process is not None
        self._output = self.child.log_path.open(errors="replace")
        self._partial = ""
        self.seen: list[str] = []

    def _next_line(self) -> str | None:
        # The output so far may end in the middle of a line; keep that part for later.
        self._partial += self._output.readline()
        if not self._partial.endswith("\n"):
            return None
        line, self._partial = self._partial, ""
        return line

    def wait_for(self, pattern: str, timeout: float = 90) -> str:
        """The next line of output matching `pattern`, the lines before it passed over."""
        found: list[str] = []

        def matched() -> bool:
            while not found and (line := self._next_line()) is not None:
                self.seen.append(line)
                if re.search(pattern, line):
                    found.append(line)
            return bool(found)

        if not poll_until(matched, timeout):
            raise AssertionError(f"no line matching {pattern!r} in:\n{self.output()}")
        return found[0]

    def wait_until_serving(self) -> tuple[str, str]:
        """The printed API URL and token, once the demo workload is done."""
        api_url = self.wait_for(r"^\s+API\s+http://").split()[1]
        token = self.wait_for(r"export TOKEN=", timeout=5).split("=", 1)[1].strip()
        self.wait_for(r"^\[events\] relayed", timeout=90)
        # The banner again after the demo report, so it is on screen while serving.
        assert self.wait_for(r"^\s+API\s+http://").split()[1] == api_url
        assert self.wait_for(r"export TOKEN=", timeout=5).split("=", 1)[1].strip() == token
        self.wait_for(r"matchops is running", timeout=5)
        return api_url, token

    def output(self) -> str:
        return "".join(self.seen)

    def close(self) -> None:
        self.child.kill_group()
        self.child.wait(60)
        self._output.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path)
    try:
        yield running
    finally:
        running.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGHUP], ids=["Ctrl-C", "SIGHUP"])
def test_run_serves_until_a_stop_signal_then_stops_every_child(stack, stop_signal):
    api_url, token = stack.wait_until_serving()

    # The printed token works against the printed API.
    reply = httpx.get(f"{api_url}/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200
    children = _descendants(stack.process.pid)
    # worker (plus its 2 pool processes), beat, api, flower
    assert len(children) >= 6, children

    stack.process.send_signal(stop_signal)
    assert stack.process.wait(60) == 0, stack.output()
    assert not [pid for pid in children if _alive(pid)]
    assert not (stack.home / "run.pid").exists()


def test_matchops_stop_stops_a_running_stack(stack):
    stack.wait_until_serving()
    children = _descendants(stack.process.pid)

    done = matchops("stop", env={"MATCHOPS_HOME": str(stack.home)}, timeout=90)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"stopping `matchops run` (pid {stack.process.pid})" in done.stdout
    assert stack.process.wait(5) == 0
    assert not [pid for pid in [stack.process.pid, *children] if _alive(pid)]
    # Nothing was left for a second stop.
    again = matchops("stop", env={"MATCHOPS_HOME": str(stack.home)})
    assert "no `matchops run` or `matchops demo` is running" in again.stdout


def test_printed_urls_hide_passwords():
    assert _masked("postgresql+psycopg://app:s3cret@db:5432/matchops") == (
        "postgresql+psycopg://app:***@db:5432/matchops"
    )
    assert _masked("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    socket_url = "postgresql+psycopg://postgres@/matchops?host=/srv/.matchops/postgres"
    assert _masked(socket_url) == socket_url
