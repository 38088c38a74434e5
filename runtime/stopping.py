"""Stopping the local stack: `matchops stop`, and what a stopping stack is waiting for.

A running `matchops run` / `matchops demo` leaves its pid in `.matchops/{mode}.pid`.
`matchops stop` sends it SIGTERM (the same as Ctrl-C), waits until it has stopped its
children, then stops the embedded servers unless another matchops process still uses them.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import kombu.exceptions
import redis.exceptions

from runtime import embedded
from runtime.polling import poll_until

STACK_MODES = ("run", "demo")
# Longer than the stack's own stop timeout, after which it kills what is left.
STACK_EXIT_TIMEOUT = 45.0

Say = Callable[[str], None]


def pid_file(mode: str, home: Path = embedded.DEFAULT_HOME) -> Path:
    """Where a running stack of `mode` keeps its pid."""
    return home / f"{mode}.pid"


@contextlib.contextmanager
def announced(mode: str) -> Iterator[None]:
    """Record this process as the running stack of `mode` for the block."""
    path = pid_file(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()


def running_tasks(worker_name: str) -> list[str]:
    """`name[id]` of every task the worker runs now ([] when it does not answer in 1 s)."""
    from workers.app import app

    try:
        replies = app.control.inspect(destination=[worker_name], timeout=1.0, limit=1).active()
    except (kombu.exceptions.OperationalError, redis.exceptions.RedisError, OSError):
        return []  # the broker is gone: nobody to ask, and stopping goes on regardless
    return [f"{task['name']}[{task['id']}]" for tasks in (replies or {}).values() for task in tasks]


def _stack_pid(mode: str) -> int | None:
    try:
        pid = int(pid_file(mode).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if embedded.pid_alive(pid) else None


def stop_stacks(say: Say) -> int:
    """SIGTERM every running stack and wait for it; the number of stacks stopped."""
    stopped = 0
    for mode in STACK_MODES:
        pid = _stack_pid(mode)
        if pid is not None:
            _stop_stack(mode, pid, say)
            stopped += 1
    return stopped


def _stop_stack(mode: str, pid: int, say: Say) -> None:
    say(f"stopping `matchops {mode}` (pid {pid}); running tasks finish first ...")
    os.kill(pid, signal.SIGTERM)
    if not poll_until(lambda: not embedded.pid_alive(pid), STACK_EXIT_TIMEOUT):
        say(f"`matchops {mode}` (pid {pid}) did not stop; killing it")
        os.kill(pid, signal.SIGKILL)


def stop_all(say: Say) -> None:
    """`matchops stop`: every running stack, then the embedded servers nobody else uses."""
    if not stop_stacks(say):
        say("no `matchops run` or `matchops demo` is running")
    still_using = embedded.stop_unused_servers()
    if still_using:
        pids = ", ".join(str(pid) for pid in sorted(still_using))
        say(
            f"the embedded servers stay up: still used by pid {pids} "
            "(a matchops worker, api, test run ...); stop those and run `matchops stop` again"
        )
    else:
        say("embedded servers stopped (if any were running)")
