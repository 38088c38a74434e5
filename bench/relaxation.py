"""Relaxation by waiting time: a simulated day of arrivals, replayed without relaxation and
at two thresholds, to show the trade-off in figures.

`python -m bench.relaxation` (in memory, no database). Requests arrive at a steady rate,
skewed across pools: a few topics draw most requests, and Easy is asked for more than
Hard. Each second a sweep pairs every pool with the sweep's own pairing function
(`domain.peer.pairing`), then, with a threshold set, pairs the leftovers across adjacent
difficulties with `domain.peer.relaxation`; every five seconds, as beat runs `peer.expire`,
requests waiting longer than the matching timeout expire. Time to match is a request's
creation to the sweep that paired it.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from domain.peer.pairing import Pool, PoolQueue, pair_pool
from domain.peer.relaxation import relax_pairs
from domain.peer.rules import DIFFICULTY_LADDER

SEED = 20261201
DAY_SECONDS = 24 * 3600
# One request every four seconds on average, all day: about 21,600 requests.
ARRIVALS_PER_SECOND = 0.25
TOPICS = 12
# Topic k draws in proportion to 1 / k**1.1: the first topic gets about a quarter.
TOPIC_SKEW = 1.1
DIFFICULTY_WEIGHTS = (0.5, 0.35, 0.15)  # Easy, Medium, Hard
MATCHING_TIMEOUT_SECONDS = 60  # the default MATCHING_TIMEOUT_SECONDS
EXPIRE_EVERY_SECONDS = 5  # beat's peer.expire schedule
# PEER_RELAX_AFTER_SECONDS of each replay; None is relaxation off.
THRESHOLDS: tuple[int | None, ...] = (None, 40, 15)
SECOND_US = 1_000_000


@dataclass(frozen=True)
class Arrival:
    """A request of the simulated day."""

    at: float  # seconds into the day
    request_id: str
    user_id: int
    pool: Pool


def simulated_day(rng: random.Random) -> list[Arrival]:
    """A day of arrivals at a steady rate (exponential gaps), skewed across pools."""
    topics = [f"topic-{k:02d}" for k in range(1, TOPICS + 1)]
    topic_weights = [1 / k**TOPIC_SKEW for k in range(1, TOPICS + 1)]
    arrivals: list[Arrival] = []
    clock = 0.0
    while True:
        clock += rng.expovariate(ARRIVALS_PER_SECOND)
        if clock >= DAY_SECONDS:
            return arrivals
        pool = (
            rng.choices(DIFFICULTY_LADDER, DIFFICULTY_WEIGHTS)[0],
            rng.choices(topics, topic_weights)[0],
        )
        request_id = str(uuid.UUID(int=rng.getrandbits(128)))
        arrivals.append(Arrival(clock, request_id, len(arrivals) + 1, pool))


@dataclass
class Outcome:
    """What became of the day's requests under one setting."""

    threshold: int | None
    waits: list[float] = field(default_factory=list)  # seconds to match, per matched request
    relaxed: int = 0  # requests matched across difficulties
    expired: int = 0
    expired_hard: int = 0


def replay(arrivals: list[Arrival], threshold: int | None) -> Outcome:
    """Run the day second by second: arrivals, expiry, the sweep, relaxation."""
    outcome = Outcome(threshold)
    pending: dict[Pool, list[Arrival]] = defaultdict(list)  # oldest first
    upcoming = iter(arrivals)
    following = next(upcoming, None)
    for second in range(DAY_SECONDS + MATCHING_TIMEOUT_SECONDS + EXPIRE_EVERY_SECONDS):
        while following is not None and following.at <= second:
            pending[following.pool].append(following)
            following = next(upcoming, None)
        if second % EXPIRE_EVERY_SECONDS == 0:
            expire(pending, second, outcome)
        sweep(pending, second, threshold, outcome)
    return outcome


def expire(pending: dict[Pool, list[Arrival]], second: int, outcome: Outcome) -> None:
    """Requests waiting longer than the matching timeout expire."""
    for pool, waiting in pending.items():
        fresh = [a for a in waiting if second - a.at <= MATCHING_TIMEOUT_SECONDS]
        gone = len(waiting) - len(fresh)
        outcome.expired += gone
        if pool[0] == "Hard":
            outcome.expired_hard += gone
        pending[pool] = fresh


def sweep(
    pending: dict[Pool, list[Arrival]], second: int, threshold: int | None, outcome: Outcome
) -> None:
    """Exact pairing in every pool, then (with a threshold) relaxation of the leftovers."""
    for pool, waiting in pending.items():
        if len(waiting) < 2:
            continue
        pairs = pair_pool([a.user_id for a in waiting], ())
        paired = {position for pair in pairs for position in pair}
        outcome.waits.extend(second - waiting[position].at for position in paired)
        pending[pool] = [a for position, a in enumerate(waiting) if position not in paired]
    if threshold is None:
        return
    pools = [pool for pool, waiting in pending.items() if waiting]
    queues = [
        PoolQueue(
            pool,
            [a.request_id for a in pending[pool]],
            [a.user_id for a in pending[pool]],
            [int(a.at * SECOND_US) for a in pending[pool]],
        )
        for pool in pools
    ]
    relaxed = relax_pairs(queues, (), second * SECOND_US, threshold * SECOND_US)
    taken: dict[Pool, set[int]] = defaultdict(set)
    for pair in relaxed:
        for seat in (pair.older, pair.newer):
            taken[pools[seat.queue]].add(seat.position)
            outcome.waits.append(second - pending[pools[seat.queue]][seat.position].at)
            outcome.relaxed += 1
    for pool, positions in taken.items():
        pending[pool] = [a for position, a in enumerate(pending[pool]) if position not in positions]


def main() -> None:
    """Replay one simulated day under each setting and print the figures side by side."""
    arrivals = simulated_day(random.Random(SEED))
    hard = sum(1 for a in arrivals if a.pool[0] == "Hard")
    print(
        f"{len(arrivals):,} requests in one simulated day ({hard:,} Hard) over "
        f"{TOPICS * len(DIFFICULTY_LADDER)} pools; matching timeout "
        f"{MATCHING_TIMEOUT_SECONDS} s\n"
    )
    header = ("relaxation", "matched", "relaxed", "expired", "Hard expired", "p50", "p95")
    rows = [header]
    for threshold in THRESHOLDS:
        outcome = replay(arrivals, threshold)
        waits = np.array(outcome.waits)
        rows.append(
            (
                "off" if threshold is None else f"after {threshold} s",
                f"{len(waits):,}",
                f"{outcome.relaxed:,}",
                f"{outcome.expired:,} ({outcome.expired / len(arrivals):.1%})",
                f"{outcome.expired_hard:,} ({outcome.expired_hard / hard:.1%})",
                f"{np.percentile(waits, 50):.1f} s",
                f"{np.percentile(waits, 95):.1f} s",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
