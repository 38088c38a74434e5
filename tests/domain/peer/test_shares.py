"""Splitting a sweep into shares of topics, and how much of each pool a claim locks."""

from __future__ import annotations

import random

from domain.peer.shares import claim_limits, split_topics


def topics(*sizes: int) -> dict[str, int]:
    return {f"topic-{index}": size for index, size in enumerate(sizes)}


def test_no_topics_means_no_shares():
    assert split_topics({}, max_shares=4, min_per_share=1) == []


def test_small_work_stays_in_one_share():
    assert split_topics(topics(600, 500, 400), max_shares=4, min_per_share=2_000) == [
        ["topic-0", "topic-1", "topic-2"]
    ]


def test_shares_get_at_least_their_minimum_and_never_outnumber_the_topics():
    assert len(split_topics(topics(3_000, 2_500), max_shares=8, min_per_share=2_000)) == 2
    assert len(split_topics(topics(3_000, 2_500, 1), max_shares=8, min_per_share=2_000)) == 2
    assert len(split_topics(topics(50_000), max_shares=8, min_per_share=2_000)) == 1


def test_every_topic_lands_in_exactly_one_share_and_the_loads_stay_close():
    rng = random.Random(7)
    sizes = topics(*(rng.randint(2, 900) for _ in range(200)))
    shares = split_topics(sizes, max_shares=3, min_per_share=1)
    assigned = [topic for share in shares for topic in share]
    assert sorted(assigned) == sorted(sizes)
    loads = [sum(sizes[topic] for topic in share) for share in shares]
    # Largest first onto the lightest share: no share is more than one topic ahead.
    assert max(loads) - min(loads) <= max(sizes.values())


def test_pools_are_claimed_whole_when_every_pair_fits():
    waiting = {("Easy", "a"): 7, ("Hard", "a"): 4}
    assert claim_limits(waiting, pairs=5, slack=16) == [7, 4]


def test_a_tight_reservation_is_shared_by_size_and_locks_about_twice_its_requests():
    waiting = {("Easy", "a"): 3_000, ("Medium", "a"): 1_000, ("Hard", "b"): 1_000}
    limits = claim_limits(waiting, pairs=500, slack=16)
    assert limits == [2 * 300 + 16, 2 * 100 + 16, 2 * 100 + 16]
    assert sum(limits) <= 2 * 500 * 1.1
    assert claim_limits(waiting, pairs=1, slack=0) == [2, 2, 2]
