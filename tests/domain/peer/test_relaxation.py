"""Relaxation by waiting time, as pure functions, checked by hand and against the rule as
written on random leftovers."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence

from domain.peer.pairing import PoolQueue, UserPair, user_pair
from domain.peer.relaxation import RelaxedPair, Seat, adjacent, easier, relax_pairs

NOW_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
SECOND = 1_000_000
THRESHOLD = 30 * SECOND


def waiting(difficulty: str, topic: str, *requests: tuple[int, float]) -> PoolQueue:
    """A pool's leftovers: (user, seconds waited) each, oldest first."""
    return PoolQueue(
        (difficulty, topic),
        [str(uuid.uuid4()) for _ in requests],
        [user for user, _ in requests],
        [NOW_US - int(age * SECOND) for _, age in requests],
    )


def users(queues: Sequence[PoolQueue], pairs: list[RelaxedPair]) -> list[tuple[int, int, str]]:
    """Each pair as (older user, newer user, the match's difficulty)."""
    return [
        (
            queues[p.older.queue].user_ids[p.older.position],
            queues[p.newer.queue].user_ids[p.newer.position],
            p.difficulty,
        )
        for p in pairs
    ]


def relax(queues: Sequence[PoolQueue], declined: set[UserPair] | None = None) -> list:
    return users(queues, relax_pairs(queues, declined or set(), NOW_US, THRESHOLD))


def test_only_a_request_waiting_longer_than_the_threshold_reaches_across():
    young = [waiting("Easy", "graphs", (1, 30)), waiting("Medium", "graphs", (2, 5))]
    overdue = [waiting("Easy", "graphs", (1, 30.5)), waiting("Medium", "graphs", (2, 5))]
    assert relax(young) == []
    # The easier difficulty goes on the match, whichever side waited.
    assert relax(overdue) == [(1, 2, "Easy")]


def test_never_two_steps_of_difficulty_nor_across_topics():
    assert relax([waiting("Easy", "graphs", (1, 50)), waiting("Hard", "graphs", (2, 50))]) == []
    assert relax([waiting("Easy", "graphs", (1, 50)), waiting("Medium", "trees", (2, 50))]) == []


def test_never_the_same_user_nor_a_declined_pair():
    queues = [waiting("Medium", "graphs", (1, 50)), waiting("Hard", "graphs", (1, 40), (2, 10))]
    assert relax(queues) == [(1, 2, "Medium")]
    assert relax(queues, {user_pair(1, 2)}) == []


def test_a_medium_request_takes_the_oldest_of_both_neighbours():
    queues = [
        waiting("Easy", "graphs", (1, 12)),
        waiting("Medium", "graphs", (2, 45)),
        waiting("Hard", "graphs", (3, 20)),
    ]
    assert relax(queues) == [(2, 3, "Medium")]


def test_the_longest_wait_is_served_first():
    queues = [waiting("Easy", "graphs", (1, 50), (2, 40)), waiting("Medium", "graphs", (3, 1))]
    # Two overdue Easy requests (left over because they declined each other), one partner.
    assert relax(queues, {user_pair(1, 2)}) == [(1, 3, "Easy")]


def test_difficulty_ladder():
    assert adjacent("Easy", "Medium") and adjacent("Hard", "Medium")
    assert not adjacent("Easy", "Hard") and not adjacent("Medium", "Medium")
    assert easier("Hard", "Medium") == "Medium"


def reference_relaxation(
    queues: Sequence[PoolQueue], declined: set[UserPair]
) -> set[frozenset[Seat]]:
    """The rule as written, slowly: while some overdue request has a partner it may meet
    in an adjacent pool of its topic, the oldest such request takes the oldest such partner."""

    def age(seat: Seat) -> tuple[int, str]:
        queue = queues[seat.queue]
        return queue.created_us[seat.position], queue.request_ids[seat.position]

    def may_meet(a: Seat, b: Seat) -> bool:
        qa, qb = queues[a.queue], queues[b.queue]
        ua, ub = qa.user_ids[a.position], qb.user_ids[b.position]
        return (
            qa.pool[1] == qb.pool[1]
            and adjacent(qa.pool[0], qb.pool[0])
            and ua != ub
            and user_pair(ua, ub) not in declined
        )

    free = {Seat(i, p) for i, q in enumerate(queues) for p in range(len(q.user_ids))}
    pairs: set[frozenset[Seat]] = set()
    while True:
        overdue = [s for s in free if queues[s.queue].created_us[s.position] < NOW_US - THRESHOLD]
        options = [
            (age(s), age(t), s, t) for s in overdue for t in free if s != t and may_meet(s, t)
        ]
        if not options:
            return pairs
        _, _, seat, partner = min(options)
        pairs.add(frozenset((seat, partner)))
        free -= {seat, partner}


def random_leftovers(rng: random.Random) -> tuple[list[PoolQueue], set[UserPair]]:
    """Leftovers of a few pools over two topics; some users in two pools, some declines."""
    queues = []
    for topic in ("graphs", "trees"):
        for difficulty in ("Easy", "Medium", "Hard"):
            size = rng.choice((0, 0, 1, 1, 2, 3))
            ages = sorted((rng.uniform(0, 60) for _ in range(size)), reverse=True)
            queues.append(waiting(difficulty, topic, *((rng.randint(1, 8), a) for a in ages)))
    declined = {user_pair(a, b) for a in range(1, 9) for b in range(a + 1, 9) if rng.random() < 0.2}
    return queues, declined


def test_agrees_with_the_rule_as_written_on_random_leftovers():
    rng = random.Random(12)
    for _ in range(3000):
        queues, declined = random_leftovers(rng)
        pairs = relax_pairs(queues, declined, NOW_US, THRESHOLD)
        assert {frozenset((p.older, p.newer)) for p in pairs} == reference_relaxation(
            queues, declined
        )
        for pair in pairs:
            older, newer = queues[pair.older.queue], queues[pair.newer.queue]
            assert pair.difficulty == easier(older.pool[0], newer.pool[0])
            assert older.created_us[pair.older.position] <= newer.created_us[pair.newer.position]
        seats = [seat for pair in pairs for seat in (pair.older, pair.newer)]
        assert len(seats) == len(set(seats))
