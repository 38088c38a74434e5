"""The pairing rule, as pure functions: oldest first, never self, never declined pairs."""

from __future__ import annotations

import random
import uuid

from domain.peer.pairing import (
    Pair,
    UserPair,
    Waiting,
    oldest_pairs,
    pair_pool,
    pair_pools,
    user_pair,
)

START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds


def waiting(user_id: int, age: int, pool: tuple[str, str] = ("Easy", "arrays")) -> Waiting:
    """A request of `user_id` made `age` seconds after START_US."""
    return Waiting(str(uuid.uuid4()), user_id, pool[0], pool[1], START_US + age * 1_000_000)


def users(pairs: list[Pair]) -> list[tuple[int, int]]:
    return [(pair.older.user_id, pair.newer.user_id) for pair in pairs]


def reference_pairing(requests: list[Waiting], declined: set[UserPair]) -> list[tuple[int, int]]:
    """The rule as written: the oldest unpaired request takes the oldest compatible later one."""
    remaining = sorted(requests, key=lambda r: (r.created_us, r.request_id))
    result = []
    while remaining:
        oldest, rest = remaining[0], remaining[1:]
        partner = next(
            (
                r
                for r in rest
                if r.user_id != oldest.user_id
                and user_pair(oldest.user_id, r.user_id) not in declined
            ),
            None,
        )
        if partner is not None:
            result.append((oldest.user_id, partner.user_id))
            rest.remove(partner)
        remaining = rest
    return result


def test_pairs_in_order_of_age_and_leaves_the_newest_odd_one_waiting():
    pool = [waiting(user, age) for user, age in ((1, 0), (2, 1), (3, 2), (4, 3), (5, 4))]
    assert users(pair_pool(pool, set())) == [(1, 2), (3, 4)]


def test_never_pairs_a_user_with_themself():
    pool = [waiting(7, 0), waiting(7, 1)]
    assert pair_pool(pool, set()) == []


def test_declined_users_are_kept_apart_and_the_next_oldest_partner_is_taken():
    pool = [waiting(1, 0), waiting(2, 1), waiting(3, 2), waiting(4, 3)]
    # 1 declined 2: 1 takes 3, then 2 takes 4.
    assert users(pair_pool(pool, {user_pair(2, 1)})) == [(1, 3), (2, 4)]


def test_a_request_passed_over_keeps_its_place_for_the_next_newcomer():
    pool = [waiting(1, 0), waiting(2, 1), waiting(3, 2)]
    # 2 declined 1 and nobody else is there yet: 1 and 2 wait; 3 goes to 1 (older).
    assert users(pair_pool(pool, {user_pair(1, 2)})) == [(1, 3)]


def test_pools_never_mix():
    easy = [waiting(1, 0, ("Easy", "graphs")), waiting(2, 5, ("Easy", "graphs"))]
    hard = [waiting(3, 1, ("Hard", "graphs")), waiting(4, 2, ("Easy", "trees"))]
    pairs = pair_pools([*hard, *easy], set())
    assert users(pairs) == [(1, 2)]


def test_input_order_does_not_matter_within_a_pool():
    pool = [waiting(user, age) for user, age in ((1, 3), (2, 0), (3, 2), (4, 1))]
    assert users(pair_pools(pool, set())) == [(2, 4), (3, 1)]


def test_matches_the_written_rule_on_random_pools_with_declines():
    rng = random.Random(20261122)
    for _ in range(300):
        size = rng.randint(0, 14)
        user_ids = [rng.randint(1, 10) for _ in range(size)]
        requests = [waiting(user, rng.randint(0, 1000)) for user in user_ids]
        declined = {
            user_pair(rng.randint(1, 10), rng.randint(1, 10)) for _ in range(rng.randint(0, 12))
        }
        assert sorted(users(pair_pools(requests, declined))) == sorted(
            reference_pairing(requests, declined)
        )


def test_budget_keeps_the_pairs_that_waited_longest_across_pools():
    pairs = pair_pools(
        [
            waiting(1, 10, ("Easy", "a")),
            waiting(2, 11, ("Easy", "a")),
            waiting(3, 0, ("Easy", "b")),
            waiting(4, 20, ("Easy", "b")),
            waiting(5, 5, ("Easy", "c")),
            waiting(6, 6, ("Easy", "c")),
        ],
        set(),
    )
    assert users(oldest_pairs(pairs, 2)) == [(3, 4), (5, 6)]
    assert oldest_pairs(pairs, 0) == []
    assert len(oldest_pairs(pairs, 10)) == 3


def test_user_pair_is_unordered():
    assert user_pair(9, 2) == user_pair(2, 9) == (2, 9)
