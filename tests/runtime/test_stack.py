"""`matchops demo` and `matchops run` end to end: real children, real shutdown."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from queue import Empty, Queue

import httpx

from runtime.stack import _masked
from tests.runtime.commands import MATCHOPS, matchops
from tests.support import ROOT


def test_demo_runs_end_to_end_and_exits_0():
    done = matchops("demo", "--api-port", "0", "--flower-port", "0", timeout=120)
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


def _lines(process: subprocess.Popen[str]) -> Queue[str]:
    lines: Queue[str] = Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for_line(lines: Queue[str], pattern: str, seen: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except Empty:
            continue
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


def test_run_serves_until_sigint_then_stops_every_child():
    process = subprocess.Popen(
        [MATCHOPS, "run", "--api-port", "0", "--flower-port", "0"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        lines = _lines(process)
        api_line = _wait_for_line(lines, r"^\s+API\s+http://", seen, timeout=90)
        api_url = api_line.split()[1]
        token_line = _wait_for_line(lines, r"export TOKEN=", seen, timeout=5)
        token = token_line.split("=", 1)[1].strip()
        _wait_for_line(lines, r"matchops is running", seen, timeout=90)

        # The printed token works against the printed API.
        reply = httpx.get(f"{api_url}/v1/tasks", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200
        children = _descendants(process.pid)
        # worker (plus its 2 pool processes), beat, api, flower
        assert len(children) >= 6, children

        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, "".join(seen)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_printed_urls_hide_passwords():
    assert _masked("postgresql+psycopg://app:s3cret@db:5432/matchops") == (
        "postgresql+psycopg://app:***@db:5432/matchops"
    )
    assert _masked("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    socket_url = "postgresql+psycopg://postgres@/matchops?host=/srv/.matchops/postgres"
    assert _masked(socket_url) == socket_url
