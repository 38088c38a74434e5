"""Waiting for a condition: the one poll loop every wait in matchops goes through."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Call `predicate` every `interval` seconds until it is truthy or `timeout` has passed.

    True when it became truthy, False on timeout. It is asked at least once, and once more
    at the deadline, so a short timeout still sees a condition that holds by then. A
    predicate that finds the wait hopeless (the process it waits for died) raises.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(interval, left))
    return True
