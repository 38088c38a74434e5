"""Sharing a sweep between lanes, as pure functions: balanced pools, a shared budget."""

from __future__ import annotations

import random

from domain.peer.lanes import share_budget, split_pools
from domain.peer.pairing import Pool, pair_count, pair_queues
from tests.domain.peer.test_pairing import START_US, paired_users, queue


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


def test_the_budget_keeps_the_oldest_pairs_over_all_lanes_in_each_queues_order():
    # Lane a: users 1-2 waited from second 10, users 3-4 from 40 (and 9 waits alone).
    first = pair_queues([queue(1, 2, pool=("Easy", "a"), start=10)], set())
    later = pair_queues([queue(3, 4, 9, pool=("Easy", "c"), start=40)], set())
    # Lane b: users 5-6 waited longest (second 0), users 7-8 from second 30.
    second = pair_queues([queue(5, 6, 7, 8, pool=("Easy", "b"), start=0)], set())
    second[0].queue.created_us[2:] = [START_US + 30_000_000, START_US + 31_000_000]
    lanes = [first + later, second]

    kept = share_budget(lanes, 3)

    assert [[paired_users(each) for each in lane] for lane in kept] == [
        [[(1, 2)], []],
        [[(5, 6), (7, 8)]],
    ]
    assert share_budget(lanes, 10) == lanes
    assert [pair_count(lane) for lane in share_budget(lanes, 0)] == [0, 0]
    assert [pair_count(lane) for lane in share_budget(lanes, -2)] == [0, 0]
