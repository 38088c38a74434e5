"""Pairing pending requests inside their pools: pure functions over plain values.

The rule: within a pool (same difficulty and topic) the oldest unpaired request is
paired with the oldest later request it is compatible with; a request with no
compatible partner keeps its place and waits. Compatible means another user, and not
two users one of whom declined the other within the cooldown.

A pool's requests travel as parallel lists, oldest first, and pairs as positions in
them: a sweep handles 100,000 requests at a time, and an object per request would
cost more than the pairing itself.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from typing import NamedTuple

Pool = tuple[str, str]  # (difficulty, topic)
UserPair = tuple[int, int]  # (lower user id, higher user id)
Positions = tuple[int, int]  # (older, newer) positions of a pair's requests in their queue


class PoolQueue(NamedTuple):
    """One pool's pending requests, oldest first (by created_at, then id)."""

    pool: Pool
    request_ids: list[str]  # the uuids' text form, as written back in bulk
    user_ids: list[int]
    # created_at in microseconds since the epoch: integers, cheaper than datetimes.
    created_us: list[int]


class Paired(NamedTuple):
    """A queue and the pairs made in it, in the order they were made."""

    queue: PoolQueue
    pairs: list[Positions]


def user_pair(first: int, second: int) -> UserPair:
    """The unordered pair of two users, as declines are stored."""
    return (first, second) if first < second else (second, first)


def pair_pool(user_ids: Sequence[int], declined: Container[UserPair]) -> list[Positions]:
    """Pair one pool's requests, given their users oldest first.

    Walking the pool once and giving each request the oldest still-unpaired
    compatible request before it yields exactly the oldest-first rule: a request
    is only passed over by an older one it is incompatible with.
    """
    unpaired: list[tuple[int, int]] = []  # (position, user), oldest first
    pairs: list[Positions] = []
    for position, user in enumerate(user_ids):
        # Usually nobody is waiting, or one request is: the common case stays cheap.
        for index, (earlier, other) in enumerate(unpaired):
            if other != user and user_pair(other, user) not in declined:
                pairs.append((earlier, position))
                del unpaired[index]
                break
        else:
            unpaired.append((position, user))
    return pairs


def pair_queues(queues: Iterable[PoolQueue], declined: Container[UserPair]) -> list[Paired]:
    """Pair every queue; pools never mix."""
    return [Paired(queue, pair_pool(queue.user_ids, declined)) for queue in queues]


def pair_count(paired: Iterable[Paired]) -> int:
    """How many pairs there are over all the queues."""
    return sum(len(each.pairs) for each in paired)


def oldest_pairs(paired: Sequence[Paired], budget: int) -> list[Paired]:
    """Keep at most `budget` pairs over all the queues: those whose older request waited
    longest. Each queue keeps the order of its own pairs."""
    if budget >= pair_count(paired):
        return list(paired)
    # Oldest first, as in a pool: by the older request's created_at, then its id.
    ranked = sorted(
        (queue.created_us[older], queue.request_ids[older], index, older)
        for index, (queue, pairs) in enumerate(paired)
        for older, _newer in pairs
    )
    kept = {(index, older) for _, _, index, older in ranked[: max(budget, 0)]}
    return [
        Paired(queue, [pair for pair in pairs if (index, pair[0]) in kept])
        for index, (queue, pairs) in enumerate(paired)
    ]
