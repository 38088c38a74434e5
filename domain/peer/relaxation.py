"""Relaxation by waiting time: pure functions over the queues exact pairing left over.

The rule (off unless PEER_RELAX_AFTER_SECONDS is set): a request that has waited longer
than the threshold and found no partner in its own pool may be paired with the oldest
waiting request of an adjacent difficulty (Easy and Medium, Medium and Hard) in the same topic.
Exact pools come first, so this only ever sees what exact pairing left; a user is never
paired with themself, nor with someone declined within the cooldown. The match takes the
easier of the two difficulties.

Requests past the threshold are served oldest first (by created_at, then id), each
taking the oldest compatible request left in the adjacent pools of its topic. Passing
over one that finds nobody is final: later pairings only take candidates away.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container, Iterable, Sequence
from typing import NamedTuple

from domain.peer.pairing import PoolQueue, UserPair, user_pair
from domain.peer.rules import DIFFICULTY_LADDER


class Seat(NamedTuple):
    """A request's place: its queue (an index into the queues given) and its position."""

    queue: int
    position: int


class RelaxedPair(NamedTuple):
    """Two requests of adjacent difficulties paired because one waited too long."""

    older: Seat  # the request created first
    newer: Seat
    difficulty: str  # the easier of the two: the match's difficulty


def adjacent(first: str, second: str) -> bool:
    """Whether two difficulties are one step apart on the ladder."""
    return abs(DIFFICULTY_LADDER.index(first) - DIFFICULTY_LADDER.index(second)) == 1


def easier(first: str, second: str) -> str:
    """The easier of two difficulties."""
    return min(first, second, key=DIFFICULTY_LADDER.index)


def relax_pairs(
    queues: Sequence[PoolQueue],
    declined: Container[UserPair],
    now_us: int,
    relax_after_us: int,
) -> list[RelaxedPair]:
    """Pair leftover requests across adjacent difficulties of a topic (see the module).

    `queues` are the unpaired requests of each pool, oldest first, after exact pairing;
    times are microseconds since the epoch. Pairs come back oldest first (by their older
    request, as exact pairs are ranked), so a cap keeps the longest waits.
    """
    by_topic: dict[str, list[int]] = defaultdict(list)
    for index, queue in enumerate(queues):
        by_topic[queue.pool[1]].append(index)
    pairs: list[RelaxedPair] = []
    for indexes in by_topic.values():
        pairs.extend(_relax_topic(queues, indexes, declined, now_us - relax_after_us))
    return sorted(pairs, key=lambda pair: _age_key(queues, pair.older))


def _relax_topic(
    queues: Sequence[PoolQueue],
    indexes: Iterable[int],
    declined: Container[UserPair],
    cutoff_us: int,
) -> list[RelaxedPair]:
    """Relaxed pairs within one topic; `cutoff_us`: created before it means overdue."""
    seats = sorted(
        (
            Seat(index, position)
            for index in indexes
            for position in range(len(queues[index].request_ids))
        ),
        key=lambda seat: _age_key(queues, seat),
    )
    taken: set[Seat] = set()
    pairs: list[RelaxedPair] = []
    for seat in seats:
        if queues[seat.queue].created_us[seat.position] >= cutoff_us:
            break  # oldest first: nobody after this one is overdue either
        if seat in taken:
            continue
        partner = _oldest_partner(queues, seats, seat, taken, declined)
        if partner is None:
            continue
        taken.update((seat, partner))
        older, newer = sorted((seat, partner), key=lambda each: _age_key(queues, each))
        difficulty = easier(queues[seat.queue].pool[0], queues[partner.queue].pool[0])
        pairs.append(RelaxedPair(older, newer, difficulty))
    return pairs


def _oldest_partner(
    queues: Sequence[PoolQueue],
    seats: Sequence[Seat],
    seat: Seat,
    taken: Container[Seat],
    declined: Container[UserPair],
) -> Seat | None:
    """The oldest free request of an adjacent difficulty the seat's user may meet."""
    difficulty = queues[seat.queue].pool[0]
    user = queues[seat.queue].user_ids[seat.position]
    for other in seats:  # oldest first
        other_user = queues[other.queue].user_ids[other.position]
        if (
            other not in taken
            and adjacent(difficulty, queues[other.queue].pool[0])
            and other_user != user
            and user_pair(user, other_user) not in declined
        ):
            return other
    return None


def _age_key(queues: Sequence[PoolQueue], seat: Seat) -> tuple[int, str]:
    """Oldest first, as in a pool: created_at, then request id."""
    queue = queues[seat.queue]
    return queue.created_us[seat.position], queue.request_ids[seat.position]
