"""Confirmations sent the way people send them: each a moment after its proposal."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any


class Answers:
    """Sends each confirmation through `submit` after a random wait of up to `think`
    seconds from its proposal, as people take a moment to answer, or at once when
    `think` is 0. The waits are drawn from `seed`, so runs draw the same ones."""

    def __init__(self, submit: Callable[..., Any], think: float, seed: int) -> None:
        self._submit = submit
        self._think = think
        self._draws = random.Random(seed)
        self._lock = threading.Lock()
        self._waiting: list[threading.Timer] = []

    def answer(self, *args: Any) -> None:
        """Submit the call with `args` now, or after its wait."""
        if self._think <= 0:
            self._submit(*args)
            return
        with self._lock:
            wait = self._draws.uniform(0, self._think)
            timer = threading.Timer(wait, self._submit, args)
            timer.daemon = True
            self._waiting.append(timer)
        timer.start()

    def close(self) -> None:
        """Cancel the waits that are not over: their calls are not made. Held in
        `contextlib.closing` inside the block of `submit`'s executor, so no wait ends
        after the executor has shut down."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for timer in waiting:
            timer.cancel()
