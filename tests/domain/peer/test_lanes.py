"""Sharing a sweep between lanes, as pure functions: balanced pools, a shared budget."""

from __future__ import annotations

import random

from domain.peer.lanes import share_budget, split_pools
from domain.peer.pairing import Pool, pair_pools
from tests.domain.peer.test_pairing import users, waiting


def pools(*sizes: int) -> dict[Pool, int]:
    return {("Easy", f"topic-{index}"): size for index, size in enumerate(sizes)}


def test_no_pools_means_no_lanes():
    assert split_pools({}, lanes=4, min_per_lane=1) == []


def test_small_work_stays_in_one_lane():
    assert split_pools(pools(600, 500, 400), lanes=4, min_per_lane=2_000) == [
        [("Easy", "topic-0"), ("Easy", "topic-1"), ("Easy", "topic-2")]
    ]


def test_lanes_get_at_least_their_minimum_and_never_more_lanes_than_pools():
    assert len(split_pools(pools(3_000, 2_500), lanes=8, min_per_lane=2_000)) == 2
    assert len(split_pools(pools(3_000, 2_500, 1), lanes=8, min_per_lane=2_000)) == 2
    assert len(split_pools(pools(50_000), lanes=8, min_per_lane=2_000)) == 1


def test_every_pool_lands_in_exactly_one_lane_and_the_loads_stay_close():
    rng = random.Random(7)
    sizes = pools(*(rng.randint(2, 900) for _ in range(200)))
    shares = split_pools(sizes, lanes=3, min_per_lane=1)
    assigned = [pool for share in shares for pool in share]
    assert sorted(assigned) == sorted(sizes)
    loads = [sum(sizes[pool] for pool in share) for share in shares]
    # Largest first onto the lightest lane: no lane is more than one pool ahead.
    assert max(loads) - min(loads) <= max(sizes.values())


# (user, age) of two lanes' pools: lane b holds the oldest pair.
AGES_A = ((1, 10), (2, 11), (3, 40), (4, 41))
AGES_B = ((5, 0), (6, 1), (7, 30), (8, 31))


def test_the_budget_keeps_the_oldest_pairs_over_all_lanes_in_each_lanes_order():
    first = pair_pools([waiting(user, age, ("Easy", "a")) for user, age in AGES_A], set())
    second = pair_pools([waiting(user, age, ("Easy", "b")) for user, age in AGES_B], set())
    kept = share_budget([first, second], 3)
    assert [users(pairs) for pairs in kept] == [[(1, 2)], [(5, 6), (7, 8)]]
    assert share_budget([first, second], 10) == [first, second]
    assert share_budget([first, second], 0) == [[], []]
    assert share_budget([first, second], -2) == [[], []]
