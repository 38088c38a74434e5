"""The best total score of an assignment, found by trying every choice: the reference."""

from __future__ import annotations

import itertools


def brute_force_best(edges: list[tuple[int, int, float]], room: dict[int, int]) -> float:
    """Best total score over every choice (a mentor or none) for every mentee."""
    by_mentee: dict[int, list[tuple[int, float]]] = {}
    for mentee, mentor, score in edges:
        by_mentee.setdefault(mentee, []).append((mentor, score))
    best = 0.0
    for choice in itertools.product(*[[None, *options] for options in by_mentee.values()]):
        used: dict[int, int] = {}
        total = 0.0
        for picked in choice:
            if picked is None:
                continue
            mentor, score = picked
            used[mentor] = used.get(mentor, 0) + 1
            total += score
        if all(count <= room.get(mentor, 0) for mentor, count in used.items()):
            best = max(best, total)
    return best
