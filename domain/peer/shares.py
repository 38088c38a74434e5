"""Splitting a sweep of every pool into tasks: pure functions over topic sizes.

A share is a list of whole topics swept in one transaction by one task. The database
writes a share's matches on one core, and a share's write is cheapest per request when
it is big (the requests of a topic are spread over every page of the table), so a big
backlog is split into a few large shares, one per worker process that may take one,
and a small one stays whole.
"""

from __future__ import annotations

from collections.abc import Mapping

# Below this many pending requests per share, another task costs more than it saves:
# each share adds a task and its transactions whatever its size, while a topic's
# requests are spread over the whole table, so a few big shares write fastest. A
# backlog of 100,000 makes four shares.
MIN_REQUESTS_PER_SHARE = 25_000
# Shares of one sweep at most: one for each of eight worker processes.
MAX_SHARES = 8


def split_topics(
    waiting: Mapping[str, int],
    max_shares: int = MAX_SHARES,
    min_per_share: int = MIN_REQUESTS_PER_SHARE,
) -> list[list[str]]:
    """Spread topics (with their pending counts) over at most `max_shares` similar shares.

    Largest topic first, each to the lightest share so far. Fewer shares when the work
    is small: every share gets `min_per_share` requests or more, and at least one topic.
    Returns no shares when there are no topics.
    """
    if not waiting:
        return []
    total = sum(waiting.values())
    count = max(1, min(max_shares, len(waiting), total // max(min_per_share, 1)))
    shares: list[list[str]] = [[] for _ in range(count)]
    loads = [0] * count
    for topic, size in sorted(waiting.items(), key=lambda item: (-item[1], item[0])):
        lightest = loads.index(min(loads))
        shares[lightest].append(topic)
        loads[lightest] += size
    return [sorted(share) for share in shares]


def claim_limits(waiting: Mapping[tuple[str, str], int], pairs: int, slack: int) -> list[int]:
    """How many of each pool's oldest requests to claim for a reservation of `pairs`.

    A pool whose pairs all fit is claimed whole. Otherwise the reservation is shared
    in proportion to the pools' sizes, and each pool claims twice its share plus
    `slack` (so a few incompatible requests among the oldest do not leave it short):
    about twice the requests that can be paired are locked, not the whole backlog.
    """
    wanted = sum(size // 2 for size in waiting.values())
    if pairs >= wanted:
        return list(waiting.values())
    total = sum(waiting.values())
    return [min(size, 2 * -(-pairs * size // total) + slack) for size in waiting.values()]
