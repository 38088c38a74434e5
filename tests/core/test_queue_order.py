"""The order a worker on Redis takes its queues in: `answers` before the others, which
take turns behind it. Pure: the cycle itself; real: a worker of one process taking
waiting messages one at a time."""

from __future__ import annotations

import uuid
from datetime import datetime

from celeryconfig import MATCHOPS_QUEUES, QUEUE_NAMES
from core.queue_order import LEADING_QUEUES, LEADING_TURNS, AnswersFirst
from tests.factories import next_id
from tests.support import WorkerProcess, queue_taken_from, running_worker, send, wait_for


def test_the_leading_queues_come_first_and_the_others_take_turns() -> None:
    cycle = AnswersFirst()
    cycle.update(list(QUEUE_NAMES))
    assert cycle.consume(len(QUEUE_NAMES))[0] == "answers"
    cycle.rotate("interactive")
    cycle.rotate("answers")
    order = cycle.consume(len(QUEUE_NAMES))
    assert order[0] == "answers"
    assert order[-1] == "interactive"
    assert sorted(order) == sorted(QUEUE_NAMES)


def test_after_a_run_of_answers_the_other_queues_get_one_turn() -> None:
    cycle = AnswersFirst()
    cycle.update(list(QUEUE_NAMES))
    for _ in range(LEADING_TURNS):
        assert cycle.consume(len(QUEUE_NAMES))[0] == "answers"
        cycle.rotate("answers")
    owed = cycle.consume(len(QUEUE_NAMES))
    assert owed[0] != "answers"
    assert owed[-1] == "answers"
    cycle.rotate(owed[0])
    assert cycle.consume(len(QUEUE_NAMES))[0] == "answers"


def test_the_leading_queues_are_matchops_queues() -> None:
    assert set(LEADING_QUEUES) <= set(MATCHOPS_QUEUES)


def _done(result: object) -> datetime:
    done = result.date_done  # type: ignore[attr-defined]
    assert isinstance(done, datetime)
    return done


def test_a_worker_takes_waiting_answers_before_new_requests(worker: WorkerProcess) -> None:
    with queue_taken_from(worker, "interactive"), queue_taken_from(worker, "answers"):
        # Both queues hold their messages before any worker takes one: requests first.
        requests = [send("peer.explain", request_id=next_id()) for _ in range(6)]
        answers = [
            send("peer.confirm", match_id=str(uuid.uuid4()), user_id=next_id(), confirmed=True)
            for _ in range(6)
        ]
        # One process, one message at a time: the order it takes them is the order they end.
        with running_worker("ordered", queues="interactive,answers", concurrency=1):
            wait_for(
                lambda: all(result.ready() for result in requests + answers),
                what="every message to be taken",
            )
    kinds = [
        kind
        for _, kind in sorted(
            [(_done(result), "answer") for result in answers]
            + [(_done(result), "request") for result in requests]
        )
    ]
    # Taken in turn, five or six requests would end before the last answer. Answers
    # first leave room for one (the others' turn after LEADING_TURNS answers), and one
    # more may have been taken before the worker had asked for both queues.
    last_answer = len(kinds) - 1 - kinds[::-1].index("answer")
    assert kinds[:last_answer].count("request") <= 2, kinds
