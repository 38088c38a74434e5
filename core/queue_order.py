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
Only a caller flooding `peer.confirm` with answers to matches that do not exist could,
and admission control refuses answers too once they wait longer than its limit.

celeryconfig names `ANSWERS_FIRST` as the Redis transport's `queue_order_strategy`. On
RabbitMQ the broker pushes each queue's messages as the worker's prefetch allows, and
this order does not apply.
"""

from __future__ import annotations

from kombu.utils.scheduling import round_robin_cycle

# Taken before any other queue, in this order (celeryconfig's MATCHOPS_QUEUES has them).
LEADING_QUEUES = ("answers",)
# What celeryconfig gives kombu as `queue_order_strategy`.
ANSWERS_FIRST = "core.queue_order:AnswersFirst"


class AnswersFirst(round_robin_cycle):
    """kombu's round robin over the worker's queues, with LEADING_QUEUES always first."""

    def consume(self, n: int) -> list[str]:
        """The first `n` queues to ask, the leading ones ahead of the rest's turn."""
        queues: list[str] = super().consume(n)
        leading = [queue for queue in LEADING_QUEUES if queue in queues]
        return leading + [queue for queue in queues if queue not in LEADING_QUEUES]
