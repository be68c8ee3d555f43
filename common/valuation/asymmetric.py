"""Asymmetric Shapley values: marginal contributions averaged over the orders a precedence allows.

Why: when data arrive in stages, or some owners derived their data from others', "who joined
first" is not an accident to average away.  Symmetric Shapley averages a player's marginal
contribution over all ``n!`` orders; the asymmetric Shapley value (Frye et al. 2020; for data,
"Rethinking Data Value: Asymmetric Data Shapley", arXiv 2511.12863) averages it only over the
orders consistent with a declared partial order ``A < B`` ("A comes before B").  Every such
order telescopes to ``v(N) − v(∅)``, so efficiency holds; with no precedence it is Shapley.

Exact values need no enumeration of orders.  With ``e(T)`` the number of linear extensions of
the precedence restricted to ``T`` (by dynamic programming over subsets: the last player of an
order of ``T`` is one with no successor in ``T``), the chance that exactly ``S`` precedes ``i``
in a uniformly random allowed order is

    P(S before i) = e(S) · e(N ∖ S ∖ {i}) / e(N)    when S and S ∪ {i} are closed downwards,

and 0 otherwise; with no precedence ``e(T) = |T|!`` and this is Shapley's weight.  Only the
closed-downwards coalitions (allowed prefixes) enter, so exact values cost as many utilities as
there are of them — fewer than ``2ⁿ`` under any precedence.  The same
counts draw allowed orders uniformly at random (from the last position back, each candidate
with probability ``e(T ∖ j)/e(T)``), which is what the sampled estimator walks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from common.valuation.bits import popcount

__all__ = ["ASYMMETRIC_MAX_PLAYERS", "asymmetric_from_table", "downsets", "extension_counts", "parse_precedence",
           "predecessors", "random_orders"]

ASYMMETRIC_MAX_PLAYERS = 24
"""The counts ``e(T)`` are a table over all ``2ⁿ`` subsets (128 MiB at 24 players)."""


def parse_precedence(specs: Sequence[str], players: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """``(before, after)`` index pairs from specs like ``"A<B,C"`` (A before B and before C),
    ``"A,B<C"`` or chains ``"A<B<C"``; each spec is one ``--precedence`` value.

    ``ValueError`` names the spec for an unknown owner, an empty side, or a cycle.
    """
    index = {p: i for i, p in enumerate(players)}
    pairs: list[tuple[int, int]] = []
    for spec in specs:
        groups = [[name.strip() for name in part.split(",") if name.strip()] for part in re.split(r"<", spec)]
        if len(groups) < 2 or any(not g for g in groups):
            raise ValueError(f"precedence {spec!r}: expected owners separated by '<', e.g. 'A<B,C'")
        unknown = [n for g in groups for n in g if n not in index]
        if unknown:
            raise ValueError(f"precedence {spec!r}: {', '.join(unknown)} not among the owners ({', '.join(players)})")
        for earlier, later in zip(groups, groups[1:]):
            pairs += [(index[a], index[b]) for a in earlier for b in later]
    predecessors(len(players), pairs)  # refuse a cycle now, with the specs in the message
    return tuple(dict.fromkeys(pairs))


def predecessors(n: int, precedence: Sequence[tuple[int, int]]) -> np.ndarray:
    """``pred[i]``: the mask of every player that must come before ``i`` (transitively closed)."""
    pred = np.zeros(n, dtype=np.int64)
    for a, b in precedence:
        if a == b:
            raise ValueError(f"precedence: player {a} cannot come before itself")
        pred[b] |= 1 << a
    for _ in range(n):  # closure: at most n rounds of "a predecessor's predecessors"
        grown = pred.copy()
        for i in range(n):
            for j in range(n):
                if pred[i] >> j & 1:
                    grown[i] |= pred[j]
        if np.array_equal(grown, pred):
            break
        pred = grown
    if any(pred[i] >> i & 1 for i in range(n)):
        raise ValueError("precedence has a cycle: some owner would have to come before itself")
    return pred


def _successors(n: int, pred: np.ndarray) -> np.ndarray:
    """``succ[j]``: the mask of every player that must come after ``j`` (``pred`` inverted)."""
    return np.array([sum(1 << k for k in range(n) if pred[k] >> j & 1) for j in range(n)], dtype=np.int64)


def downsets(n: int, pred: np.ndarray) -> np.ndarray:
    """Whether each subset holds the predecessors of every member: the allowed prefixes, the only
    coalitions whose utilities asymmetric values use."""
    masks = np.arange(1 << n, dtype=np.int64)
    closed = np.ones(masks.size, dtype=bool)
    for k in range(n):
        has = (masks >> k) & 1 == 1
        closed &= ~has | ((pred[k] & ~masks) == 0)
    return closed


def extension_counts(n: int, pred: np.ndarray) -> np.ndarray:
    """``e[T]``: orders of the players of ``T`` that respect the precedence restricted to ``T``.

    Floats (``20!`` is past 2⁶³); size by size, ``e(T) = Σ e(T ∖ j)`` over the ``j ∈ T`` with no
    successor in ``T``.
    """
    successors = _successors(n, pred)
    masks = np.arange(1 << n, dtype=np.int64)
    sizes = popcount(masks)
    e = np.zeros(1 << n)
    e[0] = 1.0
    for s in range(1, n + 1):
        level = masks[sizes == s]
        for j in range(n):
            last = level[((level >> j) & 1 == 1) & ((successors[j] & level) == 0)]
            e[last] += e[last ^ (1 << j)]
    return e


def asymmetric_from_table(table: np.ndarray, n: int, precedence: Sequence[tuple[int, int]]) -> np.ndarray:
    """Exact asymmetric Shapley values from the full utility table ``table[mask]``."""
    pred = predecessors(n, precedence)
    e = extension_counts(n, pred)
    closed = downsets(n, pred)
    masks = np.arange(1 << n, dtype=np.int64)
    full = (1 << n) - 1
    phi = np.zeros(n)
    for i in range(n):
        bit = 1 << i
        s = masks[((masks & bit) == 0) & closed & ((masks & pred[i]) == pred[i])]
        weight = e[s] * e[full ^ s ^ bit] / e[full]
        phi[i] = float(weight @ (table[s | bit] - table[s]))
    return phi


def random_orders(k: int, n: int, pred: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``k`` orders (rows of player indices) drawn uniformly among those the precedence allows."""
    successors = _successors(n, pred)
    bits = np.int64(1) << np.arange(n, dtype=np.int64)
    remaining = np.full(k, (1 << n) - 1, dtype=np.int64)
    orders = np.empty((k, n), dtype=np.int64)
    for position in range(n - 1, -1, -1):
        inside = (remaining[:, None] & bits[None, :]) != 0
        last = inside & ((remaining[:, None] & successors[None, :]) == 0)
        weight = np.where(last, counts[remaining[:, None] ^ bits[None, :]], 0.0)
        cumulative = np.cumsum(weight, axis=1)
        pick = (rng.random(k)[:, None] * cumulative[:, -1:] < cumulative).argmax(axis=1)
        orders[:, position] = pick
        remaining ^= bits[pick]
    return orders
