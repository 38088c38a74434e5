"""Sharing one sweep between lanes: pure functions over pool sizes and pairs.

A lane is one database connection with its own transaction. The database writes a
lane's matches on one core, so a big sweep spreads its pools over a few lanes to use
several. Pools never straddle lanes: a pool is paired whole, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from domain.peer.pairing import Paired, Pool, pair_count

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


def share_budget(per_lane: Sequence[Sequence[Paired]], budget: int) -> list[list[Paired]]:
    """Keep at most `budget` pairs over all lanes: those whose older request waited longest.

    Each queue keeps the order of its own pairs.
    """
    if budget >= sum(pair_count(lane) for lane in per_lane):
        return [list(lane) for lane in per_lane]
    # Oldest first, as in a pool: by the older request's created_at, then its id.
    ranked = sorted(
        (queue.created_us[older], queue.request_ids[older], lane, index, older)
        for lane, paired in enumerate(per_lane)
        for index, (queue, pairs) in enumerate(paired)
        for older, _newer in pairs
    )
    kept = {(lane, index, older) for _, _, lane, index, older in ranked[: max(budget, 0)]}
    return [
        [
            Paired(queue, [pair for pair in pairs if (lane, index, pair[0]) in kept])
            for index, (queue, pairs) in enumerate(paired)
        ]
        for lane, paired in enumerate(per_lane)
    ]
