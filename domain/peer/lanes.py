"""Sharing one sweep between lanes: pure functions over pool sizes and pairs.

A lane is one database connection with its own transaction. The database writes a
lane's matches on one core, so a big sweep spreads its pools over a few lanes to use
several. Pools never straddle lanes: a pool is paired whole, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from domain.peer.pairing import Pair, Pool, oldest_pairs

# Below this many pending requests per lane, another connection and thread cost more
# than they save: a lane of 2,000 requests is written in about 50 ms.
MIN_REQUESTS_PER_LANE = 2_000


def split_pools(
    waiting: Mapping[Pool, int], lanes: int, min_per_lane: int = MIN_REQUESTS_PER_LANE
) -> list[list[Pool]]:
    """Spread pools (with their pending counts) over at most `lanes` lanes of similar size.

    Largest pool first, each to the lightest lane so far. Fewer lanes when the work is
    small: every lane gets `min_per_lane` requests or more, and at least one pool.
    Returns no lanes when there are no pools.
    """
    if not waiting:
        return []
    total = sum(waiting.values())
    count = max(1, min(lanes, len(waiting), total // max(min_per_lane, 1)))
    shares: list[list[Pool]] = [[] for _ in range(count)]
    loads = [0] * count
    for pool, size in sorted(waiting.items(), key=lambda item: (-item[1], item[0])):
        lightest = loads.index(min(loads))
        shares[lightest].append(pool)
        loads[lightest] += size
    return shares


def share_budget(per_lane: Sequence[Sequence[Pair]], budget: int) -> list[list[Pair]]:
    """Keep at most `budget` pairs over all lanes: those whose older request waited longest.

    Each lane keeps the order of its own pairs.
    """
    everything = [pair for pairs in per_lane for pair in pairs]
    if budget >= len(everything):
        return [list(pairs) for pairs in per_lane]
    # A request is in one pair only, so the older request's id names the pair.
    kept = {pair.older.request_id for pair in oldest_pairs(everything, budget)}
    return [[pair for pair in pairs if pair.older.request_id in kept] for pairs in per_lane]
