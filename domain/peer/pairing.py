"""Pairing pending requests inside their pools: pure functions over plain values.

The rule: within a pool (same difficulty and topic) the oldest unpaired request is
paired with the oldest later request it is compatible with; a request with no
compatible partner keeps its place and waits. Compatible means another user, and not
two users one of whom declined the other within the cooldown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import NamedTuple

Pool = tuple[str, str]  # (difficulty, topic)
UserPair = tuple[int, int]  # (lower user id, higher user id)


class Waiting(NamedTuple):
    """A pending request as the sweep sees it."""

    request_id: str  # the uuid's text form, as written back in bulk
    user_id: int
    difficulty: str
    topic: str
    # created_at in microseconds since the epoch: the request's place in its pool. An
    # integer, because the sweep reads 100,000 of them at a time and datetimes cost more.
    created_us: int


# Oldest first. Equal timestamps are common in bulk inserts; the id keeps the order
# total (the text form of a uuid sorts as PostgreSQL sorts the uuid).
BY_AGE = attrgetter("created_us", "request_id")


class Pair(NamedTuple):
    """Two requests of one pool; `older` waited longer."""

    older: Waiting
    newer: Waiting


def user_pair(first: int, second: int) -> UserPair:
    """The unordered pair of two users, as declines are stored."""
    return (first, second) if first < second else (second, first)


def compatible(first: Waiting, second: Waiting, declined: set[UserPair]) -> bool:
    """Whether two requests of a pool may be paired."""
    if first.user_id == second.user_id:
        return False
    return not declined or user_pair(first.user_id, second.user_id) not in declined


def pair_pool(waiting: Sequence[Waiting], declined: set[UserPair]) -> list[Pair]:
    """Pair one pool's requests, given oldest first.

    Walking the pool once and giving each request the oldest still-unpaired
    compatible request before it yields exactly the oldest-first rule: a request
    is only passed over by an older one it is incompatible with.
    """
    unpaired: list[Waiting] = []
    pairs: list[Pair] = []
    for request in waiting:
        # Usually nobody is waiting, or one request is: the common case stays cheap.
        for index, candidate in enumerate(unpaired):
            if compatible(candidate, request, declined):
                pairs.append(Pair(unpaired.pop(index), request))
                break
        else:
            unpaired.append(request)
    return pairs


def pair_pools(waiting: Iterable[Waiting], declined: set[UserPair]) -> list[Pair]:
    """Pair every pool's requests; pools never mix."""
    pools: dict[Pool, list[Waiting]] = {}
    for request in waiting:
        pools.setdefault((request.difficulty, request.topic), []).append(request)
    pairs: list[Pair] = []
    for requests in pools.values():
        requests.sort(key=BY_AGE)
        pairs.extend(pair_pool(requests, declined))
    return pairs


def oldest_pairs(pairs: Sequence[Pair], budget: int) -> list[Pair]:
    """At most `budget` pairs, those whose older request waited longest first."""
    if budget <= 0:
        return []
    if budget >= len(pairs):
        return list(pairs)
    return sorted(pairs, key=lambda pair: BY_AGE(pair.older))[:budget]
