"""Shapley values by constrained weighted least squares over sampled coalition pairs.

The Shapley values are the solution of (Charnes et al. 1988; Lundberg & Lee 2017)

    min_φ  Σ_{∅≠S⊊N} w(S) · (v(S) − v(∅) − Σ_{i∈S} φ_i)²   s.t.  Σφ = v(N) − v(∅),
    w(S) = 1 / (C(n,|S|) · |S| · (n−|S|))      (up to a constant),

so any unbiased estimate of that objective from a sample of coalitions gives an estimator.
Here the sample is **stratified by size**: coalitions come in pairs ``(S, Sᶜ)`` (paired
sampling: the two errors largely cancel), a *unit* ``k`` holds the pairs with ``|S| = k``
(``k = 1..⌊n/2⌋``; at ``k = n/2`` a coalition and its complement are one pair), and each
unit's share of the objective is its population total estimated from its ``m_k`` pairs
drawn without replacement.  Only how the budget is split across units differs:

* ``"kernel"`` — in proportion to the Shapley kernel's mass of the unit, ``∝ 1/(k(n−k))``
  (KernelSHAP's sampling distribution);
* ``"leverage"`` — in proportion to the unit's *leverage*, which is the same for every
  size (Musco & Witter, "Provably accurate Shapley value estimation via leverage score
  sampling", ICLR 2025): Leverage SHAP, which spends more on the middle sizes, where most
  coalitions are.

Units are allocated by water-filling (:func:`~common.valuation.sizes.water_fill`), so a unit
whose share covers its population is enumerated (the border), and once the budget covers
all ``2ⁿ`` coalitions the fit uses every one of them and is exact.  Unit 1 (the ``n``
singletons with their complements) is enumerated first when it costs at most half the budget.

Standard errors are the stratified sandwich (delta-method) estimate: the solution is a
smooth function of the units' mean scores, ``δφ = Q · Σ_k c_k · mean_k(g)`` with ``Q`` the
top-left block of the inverse KKT matrix and ``g`` the per-pair score, so
``Var φ_i = Σ_k c_k² · (1 − m_k/P_k) · (Q Cov_k(g) Q)_ii / m_k``; each unit's covariance
borrows the pooled one as a pseudo-sample (:func:`~common.valuation.sampling.pooled_variance`),
and enumerated units contribute nothing.  Each pair's score is divided by ``√(1 − h)``, ``h``
its leverage in the fit (HC2: the leverages sum to the ``n − 1`` values the fit chose, and a
pair the fit leans on shows too small a residual); HC2 held ±2·stderr coverage at 0.93 where
the uniform HC1 factor ``m/(m − n + 1)`` gave 0.92 (``kernel``, budget 500, in the estimator
benchmark).  With fewer than ``2n`` pairs the residuals say too little
(measured: a 6-player fit on 9 pairs reported a symmetric pair 10 stderr apart), so the
stderr is ``inf`` until then.
"""

from __future__ import annotations

import numpy as np

from common.valuation.bits import membership
from common.valuation.sampling import Lookup, full_mask, growing_batch, pooled_variance
from common.valuation.sizes import DistinctDraws, allocate, water_fill

__all__ = ["SIZE_WEIGHTS", "RegressionSampler", "pair_leverage"]

SIZE_WEIGHTS = ("kernel", "leverage")
"""How a regression estimator may split its budget across coalition sizes."""


class RegressionSampler:
    """The sampler behind ``kernel`` and ``leverage`` (see the module docstring)."""

    def __init__(self, n: int, lookup: Lookup, rng: np.random.Generator, *, batch_size: int,
                 budget: int | None, size_weights: str) -> None:
        if size_weights not in SIZE_WEIGHTS:
            raise ValueError(f"size_weights must be one of {SIZE_WEIGHTS}, got {size_weights!r}")
        self.n, self.lookup, self.batch_size = n, lookup, batch_size
        self.draws = DistinctDraws(n, rng)
        self.cost = 2
        self.samples = 0
        self.units = np.arange(1, n // 2 + 1)
        self.canonical = [2 * k == n for k in self.units]
        self.population = np.array([self.draws.population(int(k), c) for k, c in zip(self.units, self.canonical)],
                                   dtype=np.float64)
        # c_k: the unit's weight in the objective per unit of "mean over its pairs"; a pair
        # at k = n/2 covers its size twice over (S and Sᶜ both have n/2 players), hence ½.
        half = np.where(self.canonical, 0.5, 1.0)
        self.factor = half / (self.units * (n - self.units))
        self.weights = self.factor if size_weights == "kernel" else half.copy()
        self.drawn = np.zeros(self.units.size, dtype=np.int64)
        self.members: list[list[np.ndarray]] = [[] for _ in self.units]
        self.targets: list[list[np.ndarray]] = [[] for _ in self.units]
        self.border_first = budget is None or 2 * n <= budget / 2
        ends = lookup(np.array([0, full_mask(n)], dtype=np.int64))
        self.v_empty, self.total = float(ends[0]), float(ends[1] - ends[0])

    @property
    def exhausted(self) -> bool:
        return bool((self.drawn >= self.population).all())

    def batch(self) -> int:
        return growing_batch(self.batch_size, self.samples, 2 * self.n if self.border_first else 0)

    def step(self, k: int) -> None:
        counts = np.zeros(self.units.size, dtype=np.int64)
        if self.border_first:  # the pairs of size 1 and n − 1 first, as far as this batch allows
            counts[0] = min(int(self.population[0] - self.drawn[0]), k)
            k -= int(counts[0])
        target = water_fill(self.weights, self.population, float(self.drawn.sum() + counts.sum() + k))
        room = self.population - self.drawn - counts
        counts += allocate(np.minimum(np.maximum(target - self.drawn - counts, 0.0), room), k)
        if not counts.any():
            gap = np.where(room > 0, target - self.drawn, -np.inf)
            counts[int(np.argmax(gap))] = 1
        used = [u for u, c in enumerate(counts) if c > 0]
        drawn = self.draws.draw_many([(int(self.units[u]), int(counts[u]), self.canonical[u]) for u in used])
        blocks = list(zip(used, drawn))
        masks = np.concatenate([m for _, m in blocks])
        full = full_mask(self.n)
        values = self.lookup(np.stack([masks, full ^ masks], axis=1)) - self.v_empty
        offset = 0
        for u, m in blocks:
            self.members[u].append(membership(m, self.n, bool))
            self.targets[u].append(values[offset:offset + m.size])
            offset += m.size
            self.drawn[u] += m.size
        self.samples += int(masks.size)

    def estimate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.n
        used = np.flatnonzero(self.drawn > 0)
        # All pairs in one matrix, unit by unit, so every per-unit sum is one reduceat.
        z = np.concatenate([np.concatenate(self.members[u]) for u in used]).astype(np.float64)
        y = np.concatenate([np.concatenate(self.targets[u]) for u in used])
        sizes = self.drawn[used]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        row_weight = np.repeat(self.factor[used] / sizes, sizes)
        zc = 1.0 - z
        a = (z * row_weight[:, None]).T @ z + (zc * row_weight[:, None]).T @ zc
        b = (z * row_weight[:, None]).T @ y[:, 0] + (zc * row_weight[:, None]).T @ y[:, 1]
        kkt = np.block([[a, np.ones((n, 1))], [np.ones((1, n)), np.zeros((1, 1))]])
        kkt_inv = _inverse(kkt)
        phi = (kkt_inv @ np.append(b, self.total))[:n]
        phi += (self.total - phi.sum()) / n  # rounding: keep efficiency to the last bit
        counts = np.full(n, 2 * self.samples + 2, dtype=np.int64)
        if self.samples < 2 * n:  # too few pairs beyond the n − 1 free values to measure a residual
            return phi, np.full(n, np.inf), counts
        scores = z * (y[:, 0] - z @ phi)[:, None] + zc * (y[:, 1] - zc @ phi)[:, None]
        # HC2: a pair's residuals shrink by the share of them its own fit absorbed (its
        # leverage), more so with few pairs per parameter; dividing by √(1 − h) undoes it.
        scores = scores / np.sqrt(np.clip(1.0 - pair_leverage(z, row_weight, kkt_inv[:n, :n]), 0.05, 1.0))[:, None]
        centred = scores - np.repeat(np.add.reduceat(scores, starts, axis=0) / sizes[:, None], sizes, axis=0)
        h = centred @ kkt_inv[:n, :n]
        spread = np.add.reduceat(h**2, starts, axis=0)  # (units used, n)
        dof = int((sizes - 1).sum())
        prior = spread.sum(axis=0) / dof if dof > 0 else np.full(n, np.inf)
        fpc = np.maximum(0.0, 1.0 - sizes / self.population[used])
        live = fpc > 0
        cov = pooled_variance(spread[live], sizes[live, None], prior)
        variance = ((self.factor[used][live] ** 2 * fpc[live] / sizes[live])[:, None] * cov).sum(axis=0)
        return phi, np.sqrt(variance), counts


def pair_leverage(z: np.ndarray, row_weight: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Each pair's leverage in the constrained fit: ``w·(zᵀQz + z̄ᵀQz̄)``, ``z̄ = 1 − z``.

    ``Q`` is the top-left block of the inverse KKT matrix; the trace of the hat matrix,
    so the leverages sum to ``n − 1`` (the constraint takes one value).
    """
    zc = 1.0 - z
    return row_weight * (((z @ inverse) * z).sum(axis=1) + ((zc @ inverse) * zc).sum(axis=1))


def _inverse(matrix: np.ndarray) -> np.ndarray:
    """The inverse of the KKT matrix, or its pseudo-inverse while the pairs leave it singular.

    A plain inverse is an order of magnitude cheaper than the SVD behind ``pinv``; the
    check ``M·M⁻¹ ≈ I`` catches the early, rank-deficient fits where it would be garbage.
    """
    try:
        inverse = np.linalg.inv(matrix)
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.pinv(matrix))
    if np.allclose(matrix @ inverse, np.eye(matrix.shape[0]), atol=1e-8):
        return np.asarray(inverse)
    return np.asarray(np.linalg.pinv(matrix))
