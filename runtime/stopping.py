"""Stopping the local stack: `matchops stop`, and what a stopping stack is waiting for.

A running `matchops run` / `matchops demo` keeps its pid in `.matchops/{mode}.pid`
until it has stopped its children and the embedded servers it started. `matchops stop`
sends it SIGTERM (the same as Ctrl-C) and waits for that file to go, then stops any
embedded servers still running there (see `embedded.stop_running`).
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
    """Record this process as the running stack of `mode` for the block.

    A stack already recorded there and alive stays the one recorded: `matchops stop`
    still finds it, and a second stack refused at start does not remove its record.
    """
    if _stack_pid(mode) is not None:
        yield
        return
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
    """The pid of the running stack of `mode`; None when none is recorded, or when the
    recorded one died (killed before it could remove its file)."""
    try:
        pid = int(pid_file(mode).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, and another user's
    return pid


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
    # The stack removes its pid file once everything it started has stopped.
    if not poll_until(lambda: _stack_pid(mode) != pid, STACK_EXIT_TIMEOUT):
        say(f"`matchops {mode}` (pid {pid}) did not stop; killing it")
        os.kill(pid, signal.SIGKILL)


def stop_all(say: Say) -> None:
    """`matchops stop`: every running stack, then the embedded servers still running."""
    if not stop_stacks(say):
        say("no `matchops run` or `matchops demo` is running")
    if embedded.stop_running():
        say(
            f"stopped the embedded servers still running under {embedded.DEFAULT_HOME} "
            "(started by another process, such as `make bench`, or left by a killed one)"
        )
