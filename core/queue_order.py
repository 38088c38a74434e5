"""The order in which a worker on Redis takes the queues it consumes.

kombu's Redis transport asks for the next message with one BRPOP over every queue the
worker consumes, and Redis answers from the first of them that holds one. kombu turns
the list round after each message (`round_robin_cycle`), so every queue with messages
gets the same share of the worker. Answers to work under way (`answers`: a confirmation,
a response to a mentoring request) come in bursts, a sweep's matches at once; with an
equal share, such a burst waits while the worker keeps taking new requests, and at the
knee confirmations waited two to three times as long as requests. Here the leading queues
always come first and the others take turns behind them: work under way finishes
before new work starts.

Answers do not hold the other queues back for long: each is a person's answer to a
match or request the stack made, so they come at most as fast as requests are matched.
A caller flooding `peer.confirm` with answers to matches that do not exist could, so
after LEADING_TURNS messages in a row from the leading queues the others get one turn:
under such a flood they keep a fifth of the worker, until admission control refuses
the answers for waiting longer than its limit.

celeryconfig names `ANSWERS_FIRST` as the Redis transport's `queue_order_strategy`. On
RabbitMQ the broker pushes each queue's messages as the worker's prefetch allows, and
this order does not apply.
"""

from __future__ import annotations

from kombu.utils.scheduling import round_robin_cycle

# Taken before any other queue, in this order (celeryconfig's MATCHOPS_QUEUES has them).
LEADING_QUEUES = ("answers",)
# Messages in a row from the leading queues before the other queues get one turn.
LEADING_TURNS = 4
# What celeryconfig gives kombu as `queue_order_strategy`.
ANSWERS_FIRST = "core.queue_order:AnswersFirst"


class AnswersFirst(round_robin_cycle):
    """kombu's round robin over the worker's queues, with LEADING_QUEUES first but for
    one turn of the others after every LEADING_TURNS messages in a row from them."""

    def __init__(self, it: list[str] | None = None) -> None:
        super().__init__(it)
        self._leading_in_a_row = 0

    def consume(self, n: int) -> list[str]:
        """The first `n` queues to ask, the leading ones ahead of the rest's turn unless
        the rest are owed one."""
        queues: list[str] = super().consume(n)
        if self._leading_in_a_row >= LEADING_TURNS:
            # kombu's own order, where the leading queues, just taken from, come last.
            return queues
        leading = [queue for queue in LEADING_QUEUES if queue in queues]
        return leading + [queue for queue in queues if queue not in LEADING_QUEUES]

    def rotate(self, last_used: str) -> str:
        """Called by kombu with the queue each message came from."""
        led = last_used in LEADING_QUEUES
        self._leading_in_a_row = self._leading_in_a_row + 1 if led else 0
        rotated: str = super().rotate(last_used)
        return rotated
