"""Games whose Shapley values are known in closed form, for testing estimators.

Each function returns ``(game, shapley_values)``.  The values are computed by a formula
or a counting argument specific to the game, *never* by enumerating the game's utility
table through :func:`common.valuation.shapley.exact_shapley`, so they are an independent check of
every estimator, the exact one included.

Utilities are vectorised over coalition masks (bit ``i`` ⇔ player ``i``), like FairPool's
real utilities, so estimators exercise the same batched ``Game.utilities`` path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from common.valuation.bits import membership
from common.valuation.game import Game

__all__ = ["glove_game", "airport_game", "weighted_voting_game", "additive_game", "unanimity_game"]


def _shapley_weight(s: int, n: int) -> float:
    """Probability that a given player is preceded by a given set of ``s`` others: ``s!(n−s−1)!/n!``."""
    return math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)


def glove_game(n_left: int, n_right: int) -> tuple[Game, np.ndarray]:
    """The glove game: players ``L0..`` hold left gloves, ``R0..`` right ones; a coalition is
    worth its number of matched pairs, ``min(|S∩L|, |S∩R|)``.

    A left glove adds 1 to ``S`` exactly when ``S`` holds fewer left than right gloves, so
    ``φ_L = Σ_{a<b} C(l−1, a)·C(r, b)·w(a+b)`` over the left (``a``) and right (``b``) gloves
    in ``S``, with ``w(s) = s!(n−s−1)!/n!``; symmetrically for a right glove.  Scarce gloves
    are worth more: with 1 left and 2 right gloves the values are (2/3, 1/6, 1/6).
    """
    if n_left < 0 or n_right < 0 or n_left + n_right == 0:
        raise ValueError("the glove game needs at least one player")
    n = n_left + n_right
    players = [f"L{i}" for i in range(n_left)] + [f"R{i}" for i in range(n_right)]

    def utility(masks: np.ndarray) -> np.ndarray:
        x = membership(masks, n)
        return np.minimum(x[:, :n_left].sum(axis=1), x[:, n_left:].sum(axis=1)).astype(np.float64)

    def value(own: int, other: int) -> float:
        return sum(math.comb(own - 1, a) * math.comb(other, b) * _shapley_weight(a + b, n)
                   for a in range(own) for b in range(other + 1) if a < b)

    phi = np.array([value(n_left, n_right)] * n_left + [value(n_right, n_left)] * n_right)
    return Game(players, utility), phi


def airport_game(costs: Sequence[float]) -> tuple[Game, np.ndarray]:
    """The airport (runway) cost game: ``v(S) = max_{i∈S} c_i``, ``v(∅) = 0``.

    A cost-sharing game: the values are each plane's share of the runway.  Littlechild &
    Owen (1973): with costs sorted ``c_(1) ≤ … ≤ c_(n)`` every segment ``c_(j) − c_(j−1)`` is
    split equally among the ``n − j + 1`` planes that need it, so
    ``φ_(k) = Σ_{j≤k} (c_(j) − c_(j−1)) / (n − j + 1)``.
    """
    c = np.asarray(costs, dtype=np.float64)
    if c.ndim != 1 or c.size == 0 or np.any(c < 0):
        raise ValueError("costs must be a non-empty 1-D sequence of non-negative numbers")
    n = c.size
    order = np.argsort(c, kind="stable")
    segments = np.diff(np.concatenate([[0.0], c[order]]))
    shares = np.cumsum(segments / (n - np.arange(n)))
    phi = np.empty(n)
    phi[order] = shares

    def utility(masks: np.ndarray) -> np.ndarray:
        return (membership(masks, n) * c).max(axis=1, initial=0.0)

    return Game([f"plane{i}" for i in range(n)], utility), phi


def weighted_voting_game(weights: Sequence[int], quota: int) -> tuple[Game, np.ndarray]:
    """A weighted voting game: ``v(S) = 1`` when ``Σ_{i∈S} w_i ≥ quota``, else 0.

    Shapley–Shubik power: ``φ_i`` is the probability that ``i`` is pivotal, i.e. that the
    players before it weigh ``w ∈ [quota − w_i, quota)``.  Counted by dynamic programming
    over (number of players, total weight) of the others — polynomial, and independent of
    enumerating coalitions.  E.g. weights (50, 49, 1) with quota 51 give (2/3, 1/6, 1/6).
    """
    w = [int(x) for x in weights]
    if not w or any(x < 0 for x in w) or any(x != y for x, y in zip(w, weights)):
        raise ValueError("weights must be a non-empty sequence of non-negative integers")
    n, total = len(w), sum(w)
    phi = np.zeros(n)
    for i in range(n):
        ways = np.zeros((n, total + 1), dtype=object)  # ways[s, t]: sets of s others weighing t
        ways[0, 0] = 1
        for j in range(n):
            if j != i:
                ways[1:, w[j]:] = ways[1:, w[j]:] + ways[:-1, : total + 1 - w[j]]
        lo, hi = max(0, quota - w[i]), min(quota, total + 1)
        phi[i] = sum(float(ways[s, lo:hi].sum()) * _shapley_weight(s, n) for s in range(n)) if lo < hi else 0.0
    weight_vector = np.asarray(w, dtype=np.int64)

    def utility(masks: np.ndarray) -> np.ndarray:
        return (membership(masks, n) @ weight_vector >= quota).astype(np.float64)

    return Game([f"voter{i}" for i in range(n)], utility), phi


def additive_game(weights: Sequence[float]) -> tuple[Game, np.ndarray]:
    """``v(S) = Σ_{i∈S} w_i``: every player's value is its own weight (no interactions)."""
    c = np.asarray(weights, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError("weights must be a non-empty 1-D sequence")
    n = c.size

    def utility(masks: np.ndarray) -> np.ndarray:
        return membership(masks, n) @ c

    return Game([f"p{i}" for i in range(n)], utility), c.copy()


def unanimity_game(n: int, carrier: Sequence[int]) -> tuple[Game, np.ndarray]:
    """``v(S) = 1`` when ``S ⊇ T`` (the carrier), else 0: the members of ``T`` split 1 equally.

    Unanimity games are the basis in which every game decomposes (Harsanyi dividends), so
    an estimator that fails here fails on interactions in general.
    """
    members = sorted(set(int(i) for i in carrier))
    if n < 1 or not members or members[0] < 0 or members[-1] >= n:
        raise ValueError(f"carrier must be a non-empty subset of 0..{n - 1}")
    t_mask = sum(1 << i for i in members)
    phi = np.zeros(n)
    phi[members] = 1.0 / len(members)

    def utility(masks: np.ndarray) -> np.ndarray:
        return ((masks & t_mask) == t_mask).astype(np.float64)

    return Game([f"p{i}" for i in range(n)], utility), phi
