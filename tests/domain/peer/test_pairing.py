"""The pairing rule, as pure functions: oldest first, never self, never declined pairs."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence

from domain.peer.pairing import (
    Paired,
    Pool,
    PoolQueue,
    Positions,
    UserPair,
    oldest_pairs,
    pair_count,
    pair_pool,
    pair_queues,
    user_pair,
)

START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds


def queue(*user_ids: int, pool: Pool = ("Easy", "arrays"), start: int = 0) -> PoolQueue:
    """A pool whose users asked, in this order, one second apart from `start` seconds."""
    return PoolQueue(
        pool,
        [str(uuid.uuid4()) for _ in user_ids],
        list(user_ids),
        [START_US + (start + step) * 1_000_000 for step in range(len(user_ids))],
    )


def users_of(user_ids: Sequence[int], pairs: list[Positions]) -> list[tuple[int, int]]:
    """The pairs as (older user, newer user)."""
    return [(user_ids[older], user_ids[newer]) for older, newer in pairs]


def paired_users(paired: Paired) -> list[tuple[int, int]]:
    return users_of(paired.queue.user_ids, paired.pairs)


def reference_pairing(user_ids: list[int], declined: set[UserPair]) -> list[tuple[int, int]]:
    """The rule as written: the oldest unpaired request takes the oldest compatible later one."""
    remaining = list(user_ids)
    result = []
    while remaining:
        oldest, rest = remaining[0], remaining[1:]
        partner = next(
            (user for user in rest if user != oldest and user_pair(oldest, user) not in declined),
            None,
        )
        if partner is not None:
            result.append((oldest, partner))
            rest.remove(partner)
        remaining = rest
    return result


def test_pairs_in_order_of_age_and_leaves_the_newest_odd_one_waiting():
    assert pair_pool([1, 2, 3, 4, 5], set()) == [(0, 1), (2, 3)]


def test_never_pairs_a_user_with_themself():
    assert pair_pool([7, 7], set()) == []


def test_declined_users_are_kept_apart_and_the_next_oldest_partner_is_taken():
    users = [1, 2, 3, 4]
    # 1 declined 2: 1 takes 3, then 2 takes 4.
    assert users_of(users, pair_pool(users, {user_pair(2, 1)})) == [(1, 3), (2, 4)]


def test_a_request_passed_over_keeps_its_place_for_the_next_newcomer():
    users = [1, 2, 3]
    # 2 declined 1 and nobody else is there yet: 1 and 2 wait; 3 goes to 1 (older).
    assert users_of(users, pair_pool(users, {user_pair(1, 2)})) == [(1, 3)]


def test_pools_never_mix():
    easy = queue(1, 2, pool=("Easy", "graphs"))
    hard = queue(3, pool=("Hard", "graphs"))
    trees = queue(4, pool=("Easy", "trees"))
    paired = pair_queues([hard, easy, trees], set())
    assert [paired_users(each) for each in paired] == [[], [(1, 2)], []]
    assert pair_count(paired) == 1


def test_matches_the_written_rule_on_random_pools_with_declines():
    rng = random.Random(20261122)
    for _ in range(300):
        user_ids = [rng.randint(1, 10) for _ in range(rng.randint(0, 14))]
        declined = {
            user_pair(rng.randint(1, 10), rng.randint(1, 10)) for _ in range(rng.randint(0, 12))
        }
        # Pairs are made as their newer request arrives; the rule lists them by the older.
        assert sorted(users_of(user_ids, pair_pool(user_ids, declined))) == sorted(
            reference_pairing(user_ids, declined)
        )


def test_user_pair_is_unordered():
    assert user_pair(9, 2) == user_pair(2, 9) == (2, 9)


def test_a_budget_keeps_the_oldest_pairs_over_all_pools_in_each_pools_order():
    # Users 1-2 waited from second 10, users 3-4 from 40 (and 9 waits alone); users 5-6
    # waited longest (second 0), users 7-8 from second 30.
    paired = pair_queues(
        [
            queue(1, 2, pool=("Easy", "a"), start=10),
            queue(3, 4, 9, pool=("Medium", "a"), start=40),
            queue(5, 6, 7, 8, pool=("Hard", "a"), start=0),
        ],
        set(),
    )
    paired[2].queue.created_us[2:] = [START_US + 30_000_000, START_US + 31_000_000]

    kept = oldest_pairs(paired, 3)

    assert [paired_users(each) for each in kept] == [[(1, 2)], [], [(5, 6), (7, 8)]]
    assert oldest_pairs(paired, 10) == paired
    assert pair_count(oldest_pairs(paired, 0)) == 0
    assert pair_count(oldest_pairs(paired, -2)) == 0
