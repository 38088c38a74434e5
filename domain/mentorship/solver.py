"""The optimal assignment of mentees to mentors: maximum total score under capacities.

A pure function over arrays, so it is tested against brute force without a database.

Method: a mentor with room r becomes r interchangeable "slots", and the problem is a
minimum-weight full matching in the bipartite graph mentees x (slots + one private
"stay unassigned" node per mentee), solved exactly by SciPy's sparse LAPJVsp
(`scipy.sparse.csgraph.min_weight_full_bipartite_matching`). The private node lets any
mentee stay unassigned, so a full matching always exists. Edge weights are
`ceiling - score` and the private node costs `ceiling`, with `ceiling` above every score:
each mentee pays `ceiling` once whatever happens, so minimising the weight maximises
the total score. Only positive scores are candidates: a pair worth zero or less never
raises the total, so the mentee stays free for a later, better chance.

A mentor never gets more slots than mentees who could take them, which keeps the graph
close to the size of the candidate list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray


def best_assignment(
    mentee_ids: ArrayLike | Sequence[int],
    mentor_ids: ArrayLike | Sequence[int],
    scores: ArrayLike | Sequence[float],
    room: Mapping[int, int],
) -> NDArray[np.intp]:
    """Indices (ascending) of the candidate pairs of an assignment with maximum total score.

    Candidate `i` is the pair (`mentee_ids[i]`, `mentor_ids[i]`) worth `scores[i]`; each
    pair may appear once. Each mentee gets at most one mentor; mentor `m` gets at most
    `room[m]` mentees (absent means no room). Pairs scoring zero or less are never chosen.
    """
    # Imported here, where it is used: every worker, the API and every CLI call import
    # this module for the task catalogue, and SciPy is slow to load.
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    mentees = np.asarray(mentee_ids, dtype=np.int64)
    mentors = np.asarray(mentor_ids, dtype=np.int64)
    gains = np.asarray(scores, dtype=np.float64)
    if not mentees.shape == mentors.shape == gains.shape or mentees.ndim != 1:
        raise ValueError("mentee_ids, mentor_ids and scores must be 1-d and of equal length")
    nothing = np.empty(0, dtype=np.intp)
    if mentees.size == 0:
        return nothing

    mentor_keys, mentor_index = np.unique(mentors, return_inverse=True)
    mentor_room = np.array([max(room.get(int(m), 0), 0) for m in mentor_keys], dtype=np.int64)
    usable = np.flatnonzero((gains > 0) & (mentor_room[mentor_index] > 0))
    if usable.size == 0:
        return nothing
    mentee_keys, row = np.unique(mentees[usable], return_inverse=True)
    col = mentor_index[usable]
    gain = gains[usable]
    n_mentees, n_mentors = mentee_keys.size, mentor_keys.size
    pair_key = row.astype(np.int64) * n_mentors + col
    if np.unique(pair_key).size != pair_key.size:
        raise ValueError("each (mentee, mentor) pair may appear only once")

    slots = np.minimum(mentor_room, np.bincount(col, minlength=n_mentors))
    first_slot = np.concatenate(([0], np.cumsum(slots)[:-1]))
    n_slots = int(slots.sum())
    # Candidate i is copied once per slot of its mentor: slot columns first_slot..+slots-1.
    copies = slots[col]
    copy_row = np.repeat(row, copies)
    copy_gain = np.repeat(gain, copies)
    offset_in_block = np.arange(copy_row.size) - np.repeat(np.cumsum(copies) - copies, copies)
    copy_col = np.repeat(first_slot[col], copies) + offset_in_block

    # Weights stay strictly positive: a sparse matrix reads an explicit 0 as "no edge".
    ceiling = float(gain.max()) + 1.0
    graph = csr_matrix(
        (
            np.concatenate([ceiling - copy_gain, np.full(n_mentees, ceiling)]),
            (
                np.concatenate([copy_row, np.arange(n_mentees)]),
                np.concatenate([copy_col, n_slots + np.arange(n_mentees)]),
            ),
        ),
        shape=(n_mentees, n_slots + n_mentees),
    )
    matched_rows, matched_cols = min_weight_full_bipartite_matching(graph)
    assigned = matched_cols < n_slots
    slot_mentor = np.repeat(np.arange(n_mentors), slots)
    chosen_keys = (
        matched_rows[assigned].astype(np.int64) * n_mentors + slot_mentor[matched_cols[assigned]]
    )
    by_key = np.argsort(pair_key)
    positions = np.searchsorted(pair_key[by_key], chosen_keys)
    return np.sort(usable[by_key[positions]]).astype(np.intp)
