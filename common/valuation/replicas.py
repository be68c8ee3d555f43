"""Replicas: owners that are one source to the valuation, found and paid as one (method.md §4).

Why this exists: under language-model arithmetic every owner is one more term of the sum, so a
byte copy of another owner's data doubles that data's weight in every coalition model it joins.
Shapley then pays the copier as much as the original (symmetry), and an owner who splits its
data into two "owners" gets two terms. Replication robustness (Agarwal, Dahleh & Sarkar 2019;
Ohrimenko, Tople & Tschiatschek 2019; Han et al. 2022) asks that copying never pays.

**Detection is behavioural.** Two owners are compared by their preference margins on the
coordinator's held-out pairs (the matrix ``M`` every valuation scores anyway):

    s_ij = 2·⟨M_i, M_j⟩ / (‖M_i‖² + ‖M_j‖²)  =  1 − ‖M_i − M_j‖² / (‖M_i‖² + ‖M_j‖²)

which is 1 exactly when the two adapters prefer the same held-out responses by the same amounts,
and falls with a difference in direction *or* in strength (unlike a cosine). An adapter cannot
be perturbed out of a group without changing what it does on held-out data, hence its value.
Replica groups are the connected components of ``s ≥ threshold`` (a copy of a copy is a copy).

**Payment.** The quotient game has one player per group, the group's *representative* (its
member with the highest utility alone, then the strongest margins, then the first listed):
``u(T) = v(representatives of T)``. Every utility it needs is one of the original game's, so
no model work is added. A group's value in the quotient game is split among its members in
proportion to their own positive values (equally when none is positive): a group of copies is
paid what one of them would be paid if it were alone in the market.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.valuation.bits import membership
from common.valuation.game import Game

__all__ = ["DEFAULT_REPLICA_THRESHOLD", "ReplicaGroup", "margin_similarity", "quotient_game", "replica_groups",
           "split_group_values"]

DEFAULT_REPLICA_THRESHOLD = 0.95
"""Similarity at which two owners are one source. Measured on the embedded market (seeds 0–3):
exact and 80% copies of ``clean`` score 0.96–1.00, halves of a split 0.98–1.00, while distinct
honest owners score at most 0.76 (0.89 for ``clean`` against half of its own data)."""


@dataclass(frozen=True)
class ReplicaGroup:
    """Owners (indices, ascending) that the valuation treats as one source.

    Attributes:
        members: the owners' indices; a singleton for an owner with no replica.
        representative: the member whose adapter stands for the group in the quotient game.
        similarity: the smallest pairwise margin similarity inside the group (1.0 for a singleton).
    """

    members: tuple[int, ...]
    representative: int
    similarity: float = 1.0


def margin_similarity(M: np.ndarray) -> np.ndarray:
    """``(n, n)`` matrix of ``2⟨M_i, M_j⟩ / (‖M_i‖² + ‖M_j‖²)``; 1 on the diagonal.

    Two all-zero rows (adapters that change nothing) are identical: similarity 1. One zero row
    against a nonzero one gives 0.
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"margins must be an (owners, pairs) matrix, got shape {M.shape}")
    gram = M @ M.T
    norms = np.diag(gram)
    denominator = norms[:, None] + norms[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        similarity = np.where(denominator > 0, 2.0 * gram / denominator, 1.0)
    return np.clip(similarity, -1.0, 1.0)


def replica_groups(similarity: np.ndarray, threshold: float, standalone: np.ndarray | Sequence[float],
                   strength: np.ndarray | Sequence[float] | None = None) -> tuple[ReplicaGroup, ...]:
    """Connected components of ``similarity ≥ threshold``, each with its representative.

    ``standalone`` is each owner's utility alone, ``v({i})``; ``strength`` breaks its ties
    (default: none, so the first listed of the tied wins). Groups come in order of their
    first member, so a report lists them the same way every time.
    """
    S = np.asarray(similarity, dtype=np.float64)
    n = S.shape[0]
    if S.shape != (n, n):
        raise ValueError(f"similarity must be square, got shape {S.shape}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"replica threshold must be in (0, 1], got {threshold}")
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(S >= threshold, k=1))):
        parent[root(int(j))] = root(int(i))
    components: dict[int, list[int]] = {}
    for i in range(n):
        components.setdefault(root(i), []).append(i)
    alone = np.asarray(standalone, dtype=np.float64)
    strong = np.zeros(n) if strength is None else np.asarray(strength, dtype=np.float64)
    groups = []
    for members in sorted(components.values()):
        representative = max(members, key=lambda i: (alone[i], strong[i], -i))
        inside = S[np.ix_(members, members)]
        groups.append(ReplicaGroup(tuple(members), representative, float(inside.min())))
    return tuple(groups)


def quotient_game(game: Game, groups: Sequence[ReplicaGroup]) -> Game:
    """The game whose players are the groups' representatives: ``u(T) = v(representatives in T)``.

    Its utilities are read through ``game`` (memo and store included), so a coalition the
    valuation already evaluated costs nothing here.
    """
    reps = np.array([g.representative for g in groups], dtype=np.int64)
    bits = np.left_shift(np.int64(1), reps)

    def utility(masks: np.ndarray) -> np.ndarray:
        inner = membership(masks, len(groups), np.int64) @ bits
        return game.utilities(inner)

    return Game([game.players[r] for r in reps], utility)


def split_group_values(groups: Sequence[ReplicaGroup], group_values: np.ndarray | Sequence[float],
                       own_values: np.ndarray | Sequence[float]) -> np.ndarray:
    """Each owner's value: its group's value, split in proportion to the members' positive
    ``own_values`` (equally when none is positive). A singleton keeps its group's value."""
    own = np.asarray(own_values, dtype=np.float64)
    out = np.zeros(own.shape[0])
    for group, value in zip(groups, group_values, strict=True):
        members = list(group.members)
        weights = np.maximum(own[members], 0.0)
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(members), 1.0 / len(members))
        out[members] = float(value) * weights
    return out
