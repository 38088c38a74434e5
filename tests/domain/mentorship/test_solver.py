"""The assignment solver against brute force on many small random instances."""

from __future__ import annotations

import random

import numpy as np
import pytest

from domain.mentorship.solver import best_assignment
from tests.domain.mentorship.brute_force import brute_force_best


def check_valid(
    edges: list[tuple[int, int, float]], room: dict[int, int], chosen: list[int]
) -> float:
    """Assert the chosen pairs respect every rule; return their total score."""
    mentees = [edges[i][0] for i in chosen]
    assert len(mentees) == len(set(mentees)), "a mentee got two mentors"
    per_mentor: dict[int, int] = {}
    for i in chosen:
        per_mentor[edges[i][1]] = per_mentor.get(edges[i][1], 0) + 1
        assert edges[i][2] > 0, "a pair worth nothing was chosen"
    for mentor, count in per_mentor.items():
        assert count <= room.get(mentor, 0), "a mentor got more mentees than room"
    return sum(edges[i][2] for i in chosen)


def random_instance(rng: random.Random) -> tuple[list[tuple[int, int, float]], dict[int, int]]:
    n_mentees = rng.randint(1, 6)
    n_mentors = rng.randint(1, 4)
    mentees = [100 + i for i in range(n_mentees)]
    mentors = [900 + j for j in range(n_mentors)]
    room = {m: rng.randint(0, 3) for m in mentors}
    edges = []
    for mentee in mentees:
        for mentor in mentors:
            if rng.random() < 0.7:
                # Some ties, some zeros and negatives: the edge cases of a real scores table.
                score = rng.choice([rng.uniform(-1, 5), float(rng.randint(0, 3))])
                edges.append((mentee, mentor, score))
    rng.shuffle(edges)
    return edges, room


def test_matches_brute_force_on_500_random_instances():
    for seed in range(500):
        rng = random.Random(seed)
        edges, room = random_instance(rng)
        chosen = best_assignment(
            [e[0] for e in edges], [e[1] for e in edges], [e[2] for e in edges], room
        ).tolist()
        total = check_valid(edges, room, chosen)
        assert total == pytest.approx(brute_force_best(edges, room), abs=1e-9), f"seed {seed}"


def test_capacity_forces_the_globally_best_choice_not_the_greedy_one():
    # Greedy takes (1, A)=10 first and leaves mentee 2 with nothing: total 10.
    # The optimum gives A to mentee 2 and B to mentee 1: 9 + 8 = 17.
    edges = [(1, 10, 10.0), (1, 20, 9.0), (2, 10, 8.0)]
    chosen = best_assignment(
        [e[0] for e in edges], [e[1] for e in edges], [e[2] for e in edges], {10: 1, 20: 1}
    )
    assert sorted(chosen.tolist()) == [1, 2]


def test_mentor_with_room_takes_several_mentees():
    chosen = best_assignment([1, 2, 3], [7, 7, 7], [1.0, 2.0, 3.0], {7: 2})
    assert chosen.tolist() == [1, 2]


def test_non_positive_scores_and_full_mentors_are_never_chosen():
    chosen = best_assignment([1, 2, 3], [7, 7, 8], [0.0, -1.0, 5.0], {7: 5, 8: 0})
    assert chosen.tolist() == []


def test_empty_input_gives_an_empty_assignment():
    assert best_assignment([], [], [], {}).tolist() == []


def test_duplicate_pairs_are_refused():
    with pytest.raises(ValueError, match="only once"):
        best_assignment([1, 1], [7, 7], [1.0, 2.0], {7: 1})


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="equal length"):
        best_assignment([1, 2], [7], [1.0, 2.0], {7: 1})


def test_result_is_sorted_edge_indices():
    chosen = best_assignment(
        np.array([3, 1, 2]), np.array([7, 8, 9]), [1.0, 1.0, 1.0], {7: 1, 8: 1, 9: 1}
    )
    assert chosen.tolist() == [0, 1, 2]
    assert chosen.dtype == np.intp
