"""Supervised background loops: none of them ends silently.

Four long-lived loops keep a process useful beyond its requests and tasks: the
dispatcher (in every worker and in beat), the API's broker watch and intake writer,
and the worker's event flusher. Each already handles the outages it expects; anything
else (an AMQP channel refusal, a bug) used to end it, and that part of the process
stopped with no sign. Under supervision an unexpected exception is logged with its
traceback, the loop waits a bounded, jittered backoff and starts again, and meanwhile
the part counts as down:

- in this process (`down_here`): the API's `/readyz` answers 503 while one of its own
  parts is down;
- fleet-wide in Redis (`core.redis_client`, beside the session keys): a counter of
  restarts per part, which `/metrics` exports as `matchops_thread_restarts_total{thread}`,
  and an entry per process while the part is down, which `/readyz` names under
  `elsewhere`, so a worker's dead dispatcher shows on the API's probe without taking
  the API out of service. An entry carries its own deadline, so a process killed while
  down does not leave it behind.

`fault_point(part)`, called once per round of each loop, raises `InjectedFault` while
faults are pending for the part: tests inject them with `inject_fault`, or into a
process they start with MATCHOPS_INJECT_FAULTS="dispatcher:3,event-flusher:2".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, cast

import redis.exceptions

from core.redis_client import RedisClient, redis_client

logger = logging.getLogger("matchops.supervision")

DISPATCHER: Final = "dispatcher"
BROKER_WATCH: Final = "broker-watch"
INTAKE_WRITER: Final = "intake-writer"
EVENT_FLUSHER: Final = "event-flusher"
# The supervised parts: the only label values of the restart counter.
PARTS: Final = (DISPATCHER, BROKER_WATCH, INTAKE_WRITER, EVENT_FLUSHER)

# The wait before restart n (1, 2, ...) is FIRST_BACKOFF_SECONDS * 2**(n-1), at most
# MAX_BACKOFF_SECONDS, times a random factor in [0.5, 1) so that the processes of a fleet
# hit by one cause do not restart in step. A loop that ran this long counts as healthy
# again: its next failure starts from the first backoff.
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0
# How often a coroutine's backoff looks whether its loop is stopping.
STOP_POLL_SECONDS = 0.1
# A down entry in Redis outlives its backoff by this much, then reads as stale.
DOWN_GRACE_SECONDS = 10.0

RESTARTS_KEY = "matchops:supervision:restarts"
DOWN_KEY = "matchops:supervision:down"
INJECT_ENV = "MATCHOPS_INJECT_FAULTS"

PROCESS = f"{socket.gethostname()}:{os.getpid()}"
# What the Redis client raises when it does not answer.
STORE_ERRORS = (redis.exceptions.RedisError, OSError)


class InjectedFault(RuntimeError):
    """An error a test asked a supervised loop to raise."""


@dataclass
class PartState:
    """One supervised part of this process."""

    restarts: int = 0
    down: str | None = None  # why it is down, while it waits to restart


_lock = threading.Lock()
_states: dict[str, PartState] = {}
_faults: dict[str, int] = {}


def _read_injected(spec: str) -> dict[str, int]:
    faults: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition(":")
        faults[name] = int(count or 1)
    return faults


_faults.update(_read_injected(os.environ.get(INJECT_ENV, "")))


def inject_fault(part: str, count: int = 1) -> None:
    """Make the next `count` rounds of `part`'s loop in this process raise InjectedFault."""
    with _lock:
        _faults[part] = _faults.get(part, 0) + count


def fault_point(part: str) -> None:
    """Raise InjectedFault when a fault is pending for `part` (see the module)."""
    if not _faults:
        return
    with _lock:
        pending = _faults.get(part, 0)
        if pending <= 0:
            return
        _faults[part] = pending - 1
    raise InjectedFault(f"fault injected into {part}")


def backoff_seconds(failures: int) -> float:
    """The jittered wait before restarting after the `failures`-th failure in a row."""
    ceiling: float = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2.0 ** (failures - 1))
    return ceiling * random.uniform(0.5, 1.0)


class Supervisor:
    """Counts one part's failures in a row and records them; one per supervised loop."""

    def __init__(self, part: str) -> None:
        assert part in PARTS, part
        self.part = part
        self._failures = 0
        self._started = time.monotonic()
        with _lock:
            _states.setdefault(part, PartState())

    def started(self) -> None:
        """The loop (re)starts now."""
        self._started = time.monotonic()

    def failed(self, error: BaseException) -> float:
        """Log `error` with its traceback, mark the part down; returns the backoff."""
        if time.monotonic() - self._started >= HEALTHY_AFTER_SECONDS:
            self._failures = 0
        self._failures += 1
        wait = backoff_seconds(self._failures)
        logger.error(
            "%s stopped by an unexpected error (%d in a row); restarting in %.1f s",
            self.part,
            self._failures,
            wait,
            exc_info=error,
        )
        reason = f"restarting after {type(error).__name__}"
        with _lock:
            _states[self.part].down = reason
        _shared(lambda store: _mark_down(store, self.part, reason, wait + DOWN_GRACE_SECONDS))
        return wait

    def restarted(self) -> None:
        """The backoff is over: count the restart, the part is up again."""
        with _lock:
            state = _states[self.part]
            state.restarts += 1
            state.down = None
        _shared(lambda store: _mark_up(store, self.part))
        self.started()


def supervise(part: str, run: Callable[[], None], stopping: threading.Event) -> None:
    """Run `run` until `stopping` is set, restarting it after any unexpected exception.

    `run` returns only once `stopping` is set; a thread's target wraps its loop in this.
    """
    supervisor = Supervisor(part)
    while not stopping.is_set():
        supervisor.started()
        try:
            run()
        except Exception as error:
            if stopping.wait(supervisor.failed(error)):
                return
            supervisor.restarted()


async def supervise_async(
    part: str, run: Callable[[], Awaitable[None]], stopping: Callable[[], bool]
) -> None:
    """`supervise` for a coroutine on an event loop."""
    supervisor = Supervisor(part)
    while not stopping():
        supervisor.started()
        try:
            await run()
        except Exception as error:
            # In short steps, so that a stop does not wait out the backoff.
            deadline = time.monotonic() + supervisor.failed(error)
            while time.monotonic() < deadline and not stopping():
                await asyncio.sleep(min(STOP_POLL_SECONDS, deadline - time.monotonic()))
            supervisor.restarted()


def down_here() -> dict[str, str]:
    """The supervised parts of this process that are down now, and why."""
    with _lock:
        return {part: state.down for part, state in _states.items() if state.down is not None}


def restarts_here() -> dict[str, int]:
    """Restarts per supervised part of this process."""
    with _lock:
        return {part: state.restarts for part, state in _states.items()}


def down_in_fleet() -> dict[str, str]:
    """Parts down in the other processes sharing the session store, as
    `{part}@{host}:{pid}` → why; empty when the store does not answer (this process's
    own parts are in `down_here`)."""
    try:
        # The store decodes its answers (decode_responses).
        entries = cast(dict[str, str], redis_client().hgetall(DOWN_KEY))
    except STORE_ERRORS as exc:
        logger.warning("supervision: the session store did not answer: %s", exc)
        return {}
    now = time.time()
    down: dict[str, str] = {}
    for field, value in entries.items():
        part, _, process = field.partition("@")
        entry = json.loads(value)
        if entry["until"] > now and part in PARTS and process != PROCESS:
            down[field] = entry["reason"]
    return down


def restarts_in_fleet() -> dict[str, int]:
    """Restarts per supervised part, counted over every process since the store began
    (raises the store's error when it does not answer)."""
    counts = cast(dict[str, str], redis_client().hgetall(RESTARTS_KEY))
    return {part: int(counts.get(part, 0)) for part in PARTS}


def _mark_down(store: RedisClient, part: str, reason: str, for_seconds: float) -> None:
    entry = json.dumps({"reason": reason, "until": time.time() + for_seconds})
    store.hset(DOWN_KEY, f"{part}@{PROCESS}", entry)


def _mark_up(store: RedisClient, part: str) -> None:
    pipe = store.pipeline(transaction=False)
    pipe.hincrby(RESTARTS_KEY, part, 1)
    pipe.hdel(DOWN_KEY, f"{part}@{PROCESS}")
    pipe.execute()


def _shared(write: Callable[[RedisClient], None]) -> None:
    # What this process records for the fleet must never take the loop down with it.
    try:
        write(redis_client())
    except STORE_ERRORS as exc:
        logger.warning("supervision: the session store did not take the record: %s", exc)
