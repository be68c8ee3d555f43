"""Stratified Shapley sampling by coalition size with full sample reuse (stratified SVARM).

Why this estimator: the Shapley value averages over coalition *sizes*, and splitting it by
size removes the largest source of variance that permutation sampling carries (how big the
coalition a player joins happens to be).  Grouping the formula by size ``s``,

    φ_i = (1/n) · [ v(N) − v(∅) + Σ_{s=1}^{n−1} ( μ⁺_{i,s} − μ⁻_{i,s} ) ],

where ``μ⁺_{i,s}`` is the mean utility of the size-``s`` coalitions that hold ``i`` and
``μ⁻_{i,s}`` of those that do not (Kolpaczki et al., "Approximating the Shapley value
without marginal contributions", AAAI 2024).  One coalition drawn uniformly among those of
size ``s`` is a uniform draw of the "with i" stratum of each of its members and of the
"without i" stratum of everyone else, so every evaluation updates all ``n`` players.

What FairPool adds on top:

* **Border and exactness.** Coalitions are drawn size by size without replacement
  (:class:`~common.valuation.sizes.DistinctDraws`) under a water-filling allocation
  (:func:`~common.valuation.sizes.water_fill`), so the sizes with few coalitions (1, 2, …,
  n−2, n−1) are enumerated as soon as the budget covers them, and a budget of ``2ⁿ``
  evaluations gives the exact values.  Sizes 1 and ``n−1`` are enumerated first whenever
  they cost at most half the budget: they are the only coalitions where a player's
  "with i" (size 1) and "without i" (size n−1) strata hold a single coalition.
* **Allocation.** The variance a size adds to ``φ_i`` is about ``σ²·n²/(m_s·s(n−s))`` with
  ``m_s`` draws, so the total is least with ``m_s ∝ 1/√(s(n−s))``.
* **Honest standard errors.** Each stratum contributes its own variance with the
  finite-population correction ``1 − c/P``; a stratum with few or identical samples borrows
  the spread of its whole size as one pseudo-sample (:func:`~common.valuation.sampling.pooled_variance`),
  and an empty stratum contributes a gap of 0 with that spread as its variance.
* **Efficiency.** The stratum means do not sum to ``v(N) − v(∅)`` exactly; the estimate is
  projected onto ``Σφ = v(N) − v(∅)`` along the variances (the least-variance correction),
  and the stderr shrinks accordingly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.valuation.bits import membership, popcount
from common.valuation.sampling import Lookup, full_mask, growing_batch, pooled_variance
from common.valuation.sizes import DistinctDraws, allocate, water_fill

__all__ = ["SemivalueSampler", "SizeRuns", "Strata", "StratifiedSampler", "project_efficient"]


def project_efficient(values: np.ndarray, variance: np.ndarray, total: float) -> tuple[np.ndarray, np.ndarray]:
    """Closest values (in the variance metric) with ``Σφ = total``, and their variances.

    For independent estimates ``φ̂_i`` with variances ``σ²_i`` the least-variance unbiased
    estimate under the constraint moves each value by ``σ²_i/Σσ²`` of the surplus; its
    variance drops to ``σ²_i − σ⁴_i/Σσ²``.  Infinite variances take the whole surplus
    (shared equally among them); all-zero variances mean the values are exact already.
    """
    surplus = float(values.sum() - total)
    infinite = ~np.isfinite(variance)
    if infinite.any():
        out = values.copy()
        out[infinite] -= surplus / int(infinite.sum())
        return out, variance.copy()
    spread = float(variance.sum())
    if spread <= 0.0:
        return values - surplus / max(1, values.size), variance.copy()
    share = variance / spread
    return values - share * surplus, np.maximum(variance - variance**2 / spread, 0.0)


class StratifiedSampler:
    """The sampler behind :func:`common.valuation.estimators.stratified` (see the module docstring).

    Strata live in ``(n − 1, n)`` arrays (size row × player) of counts and of sums and squared
    sums of ``v − ref``, with ``ref`` the midpoint of ``v(∅)`` and ``v(N)``: one batch updates
    all strata with a few matrix products instead of a loop over sizes and players, and the
    shift keeps the squared sums from cancelling when the utility carries a large offset.
    """

    def __init__(self, n: int, lookup: Lookup, rng: np.random.Generator, *, batch_size: int,
                 budget: int | None) -> None:
        self.n, self.lookup, self.batch_size = n, lookup, batch_size
        self.draws = DistinctDraws(n, rng)
        self.cost = 1
        self.samples = 0
        self.sizes = np.arange(1, n)
        self.population = np.array([math.comb(n, s) for s in self.sizes], dtype=np.float64)
        self.weights = 1.0 / np.sqrt(self.sizes * (n - self.sizes))
        self.drawn = np.zeros(n - 1, dtype=np.int64)
        self.strata = Strata(n)
        self.kept: list[np.ndarray] = []  # every drawn mask, in order (a surrogate fits on them)
        self.kept_y: list[np.ndarray] = []
        self.border_first = budget is None or 2 * n <= budget / 2
        ends = lookup(np.array([0, full_mask(n)], dtype=np.int64))
        self.v_empty, self.total = float(ends[0]), float(ends[1] - ends[0])
        self.ref = self.v_empty + self.total / 2

    @property
    def exhausted(self) -> bool:
        return bool((self.drawn >= self.population).all())

    def batch(self) -> int:
        return growing_batch(self.batch_size, self.samples, 2 * self.n if self.border_first else 0)

    def step(self, k: int) -> None:
        counts = np.zeros(self.n - 1, dtype=np.int64)
        if self.border_first:  # sizes 1 and n − 1 first, as far as this batch allows
            for s in sorted({1, self.n - 1}):
                take = min(int(self.population[s - 1] - self.drawn[s - 1]), k)
                counts[s - 1] = take
                k -= take
        target = water_fill(self.weights, self.population, float(self.drawn.sum() + counts.sum() + k))
        room = self.population - self.drawn - counts
        counts += allocate(np.minimum(np.maximum(target - self.drawn - counts, 0.0), room), k)
        if not counts.any():  # rounding left nothing: take the size furthest below its target
            gap = np.where(room > 0, target - self.drawn, -np.inf)
            counts[int(np.argmax(gap))] = 1
        blocks = self.draws.draw_many([(int(s), int(c), False) for s, c in zip(self.sizes, counts) if c > 0])
        masks = np.concatenate(blocks)
        y = self.lookup(masks) - self.ref
        self.strata.add(masks, y)
        self.kept.append(masks)
        self.kept_y.append(y)
        self.drawn += np.bincount(popcount(masks).astype(np.int64) - 1, minlength=self.n - 1)
        self.samples += int(masks.size)

    def estimate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values, variance = self.strata.estimate(self.total)
        return values, np.sqrt(variance), np.full(self.n, self.samples + 2, dtype=np.int64)


class SemivalueSampler(StratifiedSampler):
    """The same draws for a semivalue of size law ``q`` (Beta Shapley): sizes are allotted
    ``m_t ∝ √(q(t−1)²/t + q(t)²/(n−t))``, the allocation that minimises the variance of
    ``Σ_t q(t−1)·μ⁺_t − q(t)·μ⁻_t`` (for ``q = 1/n`` it is stratified Shapley's 1/√(t(n−t)))."""

    def __init__(self, n: int, lookup: Lookup, rng: np.random.Generator, *, batch_size: int,
                 budget: int | None, size_weights: np.ndarray) -> None:
        super().__init__(n, lookup, rng, batch_size=batch_size, budget=budget)
        self.q = np.asarray(size_weights, dtype=np.float64)
        t = self.sizes
        self.weights = np.maximum(np.sqrt(self.q[t - 1] ** 2 / t + self.q[t] ** 2 / (n - t)), 1e-300)

    def estimate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values, variance = self.strata.semivalue(self.q, self.v_empty, self.v_empty + self.total, self.ref)
        return values, np.sqrt(variance), np.full(self.n, self.samples + 2, dtype=np.int64)


@dataclass(frozen=True)
class SizeRuns:
    """Coalitions sorted by size, with where each size's run starts and their membership bits.

    Why: :meth:`Strata.add` sums over these runs; the sort and the bits are most of its cost
    and depend only on the coalitions, so games that share coalitions share them.
    """

    order: np.ndarray
    starts: np.ndarray
    rows: np.ndarray  # size − 1 of each run
    members: np.ndarray
    count: np.ndarray  # coalitions per run, as a column
    count_in: np.ndarray  # per run and player: how many hold the player

    @classmethod
    def of(cls, masks: np.ndarray, n: int) -> SizeRuns:
        size = popcount(masks).astype(np.int64)
        order = np.argsort(size, kind="stable")
        sizes, starts = np.unique(size[order], return_index=True)
        members = membership(masks[order], n)
        count = np.diff(np.append(starts, masks.size)).astype(np.float64)[:, None]
        return cls(order, starts, sizes - 1, members, count, np.add.reduceat(members, starts, axis=0))


class Strata:
    """Counts, sums and squared sums of a game's utilities per (size, player, with/without).

    Arrays are ``(n − 1, n)`` (size row × player), so one batch updates all strata with a
    few matrix products.  The utilities given should be shifted to about zero (the caller
    subtracts a reference) so the squared sums do not cancel.  Kept apart from the sampler
    so that another game on the same coalitions — a surrogate's residual — can be estimated
    the same way.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        sizes = np.arange(1, n)
        # Populations of each player's strata: size-s coalitions with and without it.
        self.pop_in = np.array([math.comb(n - 1, s - 1) for s in sizes], dtype=np.float64)[:, None]
        self.pop_out = np.array([math.comb(n - 1, s) for s in sizes], dtype=np.float64)[:, None]
        shape = (n - 1, n)
        self.count_in, self.sum_in, self.sq_in = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self.count_out, self.sum_out, self.sq_out = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self.drawn = np.zeros(n - 1)

    def add(self, masks: np.ndarray, y: np.ndarray, runs: SizeRuns | None = None) -> None:
        """Add the utilities ``y`` of ``masks``; ``runs`` is their :class:`SizeRuns`, when the
        caller already has it (several games on the same coalitions)."""
        if masks.size == 0:
            return
        runs = runs if runs is not None else SizeRuns.of(masks, self.n)
        y = y[runs.order]
        starts, rows, members, count, count_in = runs.starts, runs.rows, runs.members, runs.count, runs.count_in
        total = np.add.reduceat(y, starts)[:, None]
        squares = np.add.reduceat(y**2, starts)[:, None]
        sum_in = np.add.reduceat(members * y[:, None], starts, axis=0)
        sq_in = np.add.reduceat(members * (y**2)[:, None], starts, axis=0)
        self.count_in[rows] += count_in
        self.count_out[rows] += count - count_in
        self.sum_in[rows] += sum_in
        self.sum_out[rows] += total - sum_in
        self.sq_in[rows] += sq_in
        self.sq_out[rows] += squares - sq_in
        self.drawn[rows] += count[:, 0]

    def _prior(self, total: float) -> np.ndarray:
        """Each size's spread over all its draws, one pseudo-sample of every stratum of that
        size; sizes with fewer than two draws borrow the mean spread (or, before any draw, the
        square of what the players share). Shape ``(n − 1, 1)``."""
        size_count = self.drawn
        size_sum = (self.sum_in[:, 0] + self.sum_out[:, 0])
        size_sq = (self.sq_in[:, 0] + self.sq_out[:, 0])
        with np.errstate(divide="ignore", invalid="ignore"):
            size_var = np.where(size_count >= 2, (size_sq - size_sum**2 / np.maximum(size_count, 1))
                                / np.maximum(size_count - 1, 1), np.nan)
        size_var = np.maximum(size_var, 0.0)
        fallback = float(np.nanmean(size_var)) if np.isfinite(size_var).any() else total**2
        return np.where(np.isfinite(size_var), size_var, fallback)[:, None]

    def _variances(self, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (_mean_variance(self.count_in, self.sum_in, self.sq_in, self.pop_in, prior),
                _mean_variance(self.count_out, self.sum_out, self.sq_out, self.pop_out, prior))

    def estimate(self, total: float) -> tuple[np.ndarray, np.ndarray]:
        """Values and their variances, projected onto ``Σφ = total`` (= v(N) − v(∅))."""
        n = self.n
        var_in, var_out = self._variances(self._prior(total))
        seen = (self.count_in > 0) & (self.count_out > 0)
        mean_in = self.sum_in / np.maximum(self.count_in, 1)
        mean_out = self.sum_out / np.maximum(self.count_out, 1)
        gaps = np.where(seen, mean_in - mean_out, 0.0)
        values = (total + gaps.sum(axis=0)) / n
        variance = (var_in + var_out).sum(axis=0) / n**2
        return project_efficient(values, variance, total)

    def semivalue(self, size_weights: np.ndarray, v_empty: float, v_full: float,
                  ref: float) -> tuple[np.ndarray, np.ndarray]:
        """Values of the semivalue with size law ``q`` (``size_weights``), and their variances.

        Regrouping ``φ_i = Σ_s q(s)·[μ⁺_{i,s+1} − μ⁻_{i,s}]`` by stratum size ``t`` gives
        ``q(n−1)·v(N) − q(0)·v(∅) + Σ_t [q(t−1)·μ⁺_{i,t} − q(t)·μ⁻_{i,t}]``; no projection, as a
        semivalue other than Shapley is not efficient. ``ref`` is the shift the stored sums
        carry. A stratum not drawn yet stands in with its size's mean and that size's spread.
        """
        q = np.asarray(size_weights, dtype=np.float64)
        var_in, var_out = self._variances(self._prior(v_full - v_empty))
        size_mean = ((self.sum_in[:, 0] + self.sum_out[:, 0]) / np.maximum(self.drawn, 1))[:, None]
        mean_in = np.where(self.count_in > 0, self.sum_in / np.maximum(self.count_in, 1), size_mean) + ref
        mean_out = np.where(self.count_out > 0, self.sum_out / np.maximum(self.count_out, 1), size_mean) + ref
        a, b = q[:-1, None], q[1:, None]  # coefficients of μ⁺_t and μ⁻_t, t = 1 … n−1
        values = q[-1] * v_full - q[0] * v_empty + (a * mean_in - b * mean_out).sum(axis=0)
        return values, (a**2 * var_in + b**2 * var_out).sum(axis=0)


def _mean_variance(count: np.ndarray, total: np.ndarray, squares: np.ndarray, population: np.ndarray,
                   prior: np.ndarray) -> np.ndarray:
    """Variance of each stratum mean: pooled sample variance / count, times ``1 − count/P``."""
    c = np.maximum(count, 1)
    m2 = np.maximum(squares - total**2 / c, 0.0)
    fpc = np.clip(1.0 - count / population, 0.0, 1.0)
    return pooled_variance(m2, c, prior) / c * fpc
