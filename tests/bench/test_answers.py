"""The bench's confirmations: at once by default, or each after a wait of its own."""

from __future__ import annotations

import threading
import time
from contextlib import closing

from bench.answers import Answers
from runtime.polling import poll_until


class Calls:
    """What an `Answers` submitted, and when (seconds after the test's start)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.lock = threading.Lock()
        self.made: list[tuple[str, float]] = []

    def submit(self, name: str) -> None:
        with self.lock:
            self.made.append((name, time.perf_counter() - self.started))


def test_without_a_think_time_each_answer_is_submitted_at_once() -> None:
    calls = Calls()
    answers = Answers(calls.submit, 0, seed=1)
    answers.answer("a")
    answers.answer("b")
    assert [name for name, _ in calls.made] == ["a", "b"]


def test_with_a_think_time_each_answer_waits_its_own_time_up_to_it() -> None:
    calls = Calls()
    answers = Answers(calls.submit, 0.4, seed=1)
    names = [f"answer-{n}" for n in range(20)]
    for name in names:
        answers.answer(name)
    poll_until(lambda: len(calls.made) == len(names), 5, 0.01)
    answers.close()

    assert sorted(name for name, _ in calls.made) == sorted(names)
    waits = [at for _, at in calls.made]
    # Spread over the think time, not all at once: the latest came well after the first.
    assert max(waits) - min(waits) > 0.2
    assert max(waits) < 0.4 + 1.0  # the think time, and a loaded machine's lag


def test_leaving_the_block_cancels_the_answers_still_waiting() -> None:
    calls = Calls()
    # Seed 1 draws waits of 67, 424 and 382 ms out of 0.5 s.
    with closing(Answers(calls.submit, 0.5, seed=1)) as answers:
        for name in ("a", "b", "c"):
            answers.answer(name)
    # Past every wait drawn: an answer left waiting would have been made by now.
    time.sleep(0.7)
    assert calls.made == []
