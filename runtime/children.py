"""Child processes that matchops supervises: the local stack's parts, the embedded
servers, test workers and APIs, bench workers.

Each child runs in a session of its own, so a terminal's Ctrl-C reaches only its
supervisor, which stops it in its own way; its output goes to a log file, whose tail
explains a child that died. On Linux a child also gets its stop signal when the thread
that started it goes away, even by SIGKILL, so no orphan keeps a port or takes tasks.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

# Children start from here, and the local stack keeps its files under it by default.
REPO_ROOT = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1
# Looked up here, in the parent: between fork and exec the child may only call what is
# already resolved (a dlopen there can deadlock on a lock another thread held).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent(signum: signal.Signals) -> Callable[[], None] | None:
    prctl = _PRCTL
    if prctl is None:
        return None

    def die_with_parent() -> None:
        # Runs in the child after it took on `user`: a change of user clears the setting.
        prctl(PR_SET_PDEATHSIG, signum)

    return die_with_parent


@dataclass
class Child:
    """One command running as a supervised child process, its output in a log file.

    `env` is laid over this process's environment when the child starts; a None value
    removes that variable. `user` (a uid) runs it as another user. `stop_signal` asks
    it to stop: `terminate` sends it, and so does the system when this process dies.
    """

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str | None] = field(default_factory=dict)
    user: int | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @classmethod
    def matchops(
        cls,
        name: str,
        args: list[str],
        log_path: Path,
        env: Mapping[str, str | None] | None = None,
    ) -> Child:
        """A `matchops <args>` subcommand, run by this interpreter."""
        return cls(name, [sys.executable, "-m", "runtime.cli", *args], log_path, env or {})

    @property
    def pid(self) -> int:
        """The child's pid (it must have been started)."""
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process.pid

    def start(self) -> None:
        """Spawn the command in its own session, from the repository's root."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        environment = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env={key: value for key, value in environment.items() if value is not None},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=self.user,
            preexec_fn=_die_with_parent(self.stop_signal),
        )

    def running(self) -> bool:
        """Whether the process is still alive."""
        return self.process is not None and self.process.poll() is None

    def terminate(self, group: bool = False) -> None:
        """The stop signal to the child alone, or with `group` to everything it spawned too.

        A Celery worker given SIGTERM alone shuts down warm, letting its pool processes
        finish their tasks; SIGTERM to the pool processes kills them mid-task.
        """
        process = self.process
        if process is None or process.poll() is not None:
            return
        if group:
            self._signal_group(self.stop_signal)
        else:
            process.send_signal(self.stop_signal)

    def kill_group(self) -> None:
        """SIGKILL the child and everything it spawned (its pool processes)."""
        if self.process is not None:
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def wait(self, timeout: float) -> None:
        """Wait for exit; kill the whole group when it takes longer than `timeout`."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            self.process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, timeout: float, group: bool = False) -> None:
        """`terminate`, then `wait` up to `timeout` seconds."""
        self.terminate(group)
        self.wait(timeout)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the child's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
