"""Coalitions by size: how many to draw of each size, and drawing them without repeats.

Shapley values weigh every coalition *size* equally, and the stratified and regression
estimators sample size by size.  Two ideas from the literature live here, once:

* **Water-filling allocation** (:func:`water_fill`): a budget is split across sizes in
  proportion to each size's weight, but never more than a size holds.  A size whose share
  would exceed its population is enumerated outright and the rest of the budget flows to
  the others.  The smallest and largest sizes hold few coalitions (``n`` of size 1), so a
  budget enumerates them first — the "border" trick — and once it reaches ``2ⁿ`` every size
  is enumerated and the estimate is exact.
* **Distinct draws** (:class:`DistinctDraws`): coalitions of a size are drawn uniformly
  *without replacement*, so no evaluation is spent twice and the finite-population
  correction of each stratum's variance is valid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from common.valuation.bits import popcount

__all__ = ["DistinctDraws", "allocate", "masks_of_size", "water_fill"]

LIST_MAX = 200_000
"""Sizes with at most this many coalitions left may be listed outright to draw from."""

_SIZES_CACHE: dict[int, np.ndarray] = {}
_BY_SIZE_CACHE: dict[tuple[int, int], np.ndarray] = {}
"""Listed coalitions by ``(n, size)``: drawing near exhaustion lists a size again and again."""


def water_fill(weights: np.ndarray, capacity: np.ndarray, total: float) -> np.ndarray:
    """``m_s = min(capacity_s, λ·weights_s)`` with ``Σ m = min(total, Σ capacity)``.

    The allocation that is proportional to ``weights`` wherever the capacity allows it.
    Zero weights get nothing unless every positive-weight cell is full.
    """
    weights = np.asarray(weights, dtype=np.float64)
    capacity = np.asarray(capacity, dtype=np.float64)
    total = min(float(total), float(capacity.sum()))
    out = np.zeros_like(capacity)
    free = (capacity > 0) & (weights > 0)
    left = total
    while free.any() and left > 1e-9:
        lam = left / weights[free].sum()
        full = free & (lam * weights >= capacity)
        if not full.any():
            out[free] = lam * weights[free]
            return out
        out[full] = capacity[full]
        left -= float(capacity[full].sum())
        free &= ~full
    if left > 1e-9:  # positive weights are all full: spill onto zero-weight cells
        rest = (capacity > out)
        out[rest] += water_fill(np.ones(int(rest.sum())), capacity[rest] - out[rest], left)
    return out


def allocate(targets: np.ndarray, k: int) -> np.ndarray:
    """Integers summing to ``min(k, ⌊Σ targets⌋)``, proportional to ``targets`` (largest remainder).

    No cell gets more than ``⌈targets⌉``, so a target's cap (what is left to draw) holds.
    """
    targets = np.maximum(np.asarray(targets, dtype=np.float64), 0.0)
    total = targets.sum()
    if total < 1e-9 or k <= 0:  # nothing (or only rounding dust) to allocate
        return np.zeros(targets.shape, dtype=np.int64)
    scaled = targets * min(1.0, k / total)
    base = np.floor(scaled + 1e-9).astype(np.int64)
    short = min(k, int(math.floor(scaled.sum() + 1e-9))) - int(base.sum())
    if short > 0:
        room = np.ceil(targets - 1e-9).astype(np.int64) - base
        order = np.argsort(-(scaled - base), kind="stable")
        for i in order[room[order] > 0][:short]:  # largest remainders first, full cells never
            base[i] += 1
    return base


def masks_of_size(n: int, k: int, *, with_player: int | None = None) -> np.ndarray:
    """All coalitions of ``k`` of ``n`` players, ascending (optionally only those holding a player)."""
    key = (n, k)
    if key not in _BY_SIZE_CACHE:
        if n <= 22 and math.comb(n, k) > 50_000:  # filtering 2ⁿ masks beats listing combinations
            if n not in _SIZES_CACHE:
                _SIZES_CACHE[n] = popcount(np.arange(1 << n, dtype=np.int64)).astype(np.int8)
            masks = np.flatnonzero(_SIZES_CACHE[n] == k).astype(np.int64)
        else:
            masks = np.array(sorted(sum(1 << i for i in c) for c in itertools.combinations(range(n), k)),
                             dtype=np.int64)
        _BY_SIZE_CACHE[key] = masks
    masks = _BY_SIZE_CACHE[key]
    if with_player is not None:
        masks = masks[(masks >> with_player) & 1 == 1]
    return masks


class DistinctDraws:
    """Uniform draws of coalitions of a given size, never the same coalition twice.

    With ``canonical`` a size-``n/2`` coalition and its complement are one unit (the
    representative holds player 0): the regression estimator evaluates each coalition
    with its complement, so drawing both would repeat the pair.
    """

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n, self.rng = n, rng
        self._drawn: dict[tuple[int, bool], set[int]] = {}

    def population(self, size: int, canonical: bool = False) -> int:
        count = math.comb(self.n, size)
        return count // 2 if canonical else count

    def drawn(self, size: int, canonical: bool = False) -> int:
        return len(self._drawn.get((size, canonical), ()))

    def draw(self, size: int, count: int, canonical: bool = False) -> np.ndarray:
        """``count`` new coalitions of ``size`` (fewer if fewer are left), uniformly at random."""
        return self.draw_many([(size, count, canonical)])[0]

    def draw_many(self, requests: Sequence[tuple[int, int, bool]]) -> list[np.ndarray]:
        """:meth:`draw` for each ``(size, count, canonical)``, with one random draw for them all.

        A size that is nearly used up (or small) is listed and chosen from; the others draw
        random subsets together and redraw repeats.  One vectorised draw per batch instead
        of one per size keeps the per-evaluation overhead low when a batch spans many sizes.
        """
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(requests)
        pending: list[tuple[int, int, int, bool]] = []
        for i, (size, count, canonical) in enumerate(requests):
            seen = self._drawn.setdefault((size, canonical), set())
            left = self.population(size, canonical) - len(seen)
            count = min(count, left)
            if count <= 0:
                continue
            if left <= LIST_MAX and (count * 2 >= left or len(seen) * 4 >= left):
                pool = masks_of_size(self.n, size, with_player=0 if canonical else None)
                pool = pool[~np.isin(pool, np.fromiter(seen, dtype=np.int64, count=len(seen)))]
                chosen = pool if count == pool.size else self.rng.choice(pool, size=count, replace=False)
                seen.update(chosen.tolist())
                out[i] = np.asarray(chosen, dtype=np.int64)
            else:
                pending.append((i, size, count, canonical))
        if pending:
            for (i, size, _, canonical), chosen in zip(pending, self._rejection(pending)):
                self._drawn[(size, canonical)].update(chosen.tolist())
                out[i] = chosen
        return out

    def _rejection(self, pending: list[tuple[int, int, int, bool]]) -> list[np.ndarray]:
        """Random subsets of each pending size, redrawing repeats (sizes with few taken so far).

        A row's subset is the ``size`` players with the smallest of ``n`` uniform keys: one
        sort of the keys (no indices) gives each row's threshold, one product its mask.
        """
        full = (1 << self.n) - 1
        got: list[list[int]] = [[] for _ in pending]
        taken: list[set[int]] = [set() for _ in pending]
        while True:
            want = np.array([c - len(g) for (_, _, c, _), g in zip(pending, got)], dtype=np.int64)
            if not want.any():
                return [np.array(g, dtype=np.int64) for g in got]
            rows = want + want // 4 + np.where(want > 0, 1, 0)
            sizes = np.repeat([p[1] for p in pending], rows)
            keys = self.rng.random((int(rows.sum()), self.n))
            threshold = np.sort(keys, axis=1)[np.arange(sizes.size), sizes - 1]
            masks = (keys <= threshold[:, None]) @ (np.int64(1) << np.arange(self.n, dtype=np.int64))
            start = 0
            for j, ((_, size, count, canonical), r) in enumerate(zip(pending, rows.tolist())):
                chunk = masks[start:start + r]
                start += r
                if canonical:
                    chunk = np.where(chunk & 1, chunk, full ^ chunk)
                seen = self._drawn[(size, canonical)]
                for m in chunk.tolist():
                    if len(got[j]) == count:
                        break
                    if m not in seen and m not in taken[j]:
                        taken[j].add(m)
                        got[j].append(m)
