"""Tree surrogates of a game: fit one to evaluated coalitions, and its exact Shapley values.

Why: many utilities are close to a function of a few membership tests — a cost that is
the largest member's (airport), a sum of unanimity terms, a model that is good once a
key owner is in.  A regression tree on the membership bits fits such a game from a few
hundred coalitions, and a tree's Shapley values are exact and cheap: each leaf is a
conjunction "these players present, those absent", whose game
``u(S) = 1[P ⊆ S, A ∩ S = ∅]`` has the closed form (from its multilinear extension
``∫₀¹ t^{|P|−1}(1−t)^{|A|} dt``)

    φ_i = (|P|−1)!·|A|! / (|P|+|A|)!        for i ∈ P,
    φ_j = −|P|!·(|A|−1)! / (|P|+|A|)!       for j ∈ A.

The estimator that uses it (:class:`SurrogateSampler`) is a control variate on top of
stratified sampling, in the spirit of shapiq's RegressionMSR (Witter et al. 2025): the
values are ``φ(tree) + φ̂(v − tree)``, the second term estimated by the same stratified
estimator from coalitions the tree was *not* fitted on (two-fold cross-fitting), so it stays
unbiased however good or bad the fit, and its stderr is honest.  When the residual's
estimated variance is not below plain stratified sampling's, the plain estimate is kept.  A
tree refitted on every evaluated coalition that interpolates all of them replaces the
cross-fitted estimate (RegressionMSR's in-sample fit, with the cross-fitted stderr widened
to at least the distance it moved the values): on the airport game it is exact from 2,000
of 2²⁰ coalitions, where the halves were 10⁻⁴ off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.valuation.bits import popcount
from common.valuation.stratified import Strata, StratifiedSampler

__all__ = ["SurrogateSampler", "Tree", "fit_tree", "tree_shapley"]

MIN_LEAF = 1
"""Fewest coalitions a leaf may hold."""

MAX_PAIR_PLAYERS = 24
"""Order-2 polynomial surrogates up to this many players (276 pair terms); additive beyond,
where the pair terms would cost more to fit than the evaluations they save."""


@dataclass(frozen=True)
class Tree:
    """A binary regression tree on membership bits; node 0 is the root.

    ``feature[k]`` is the player node ``k`` tests (−1 for a leaf); its ``absent`` and
    ``present`` children take the coalitions without and with that player.
    """

    feature: np.ndarray
    absent: np.ndarray
    present: np.ndarray
    value: np.ndarray

    @property
    def leaves(self) -> int:
        return int((self.feature < 0).sum())

    def predict(self, masks: np.ndarray) -> np.ndarray:
        node = np.zeros(masks.size, dtype=np.int64)
        while True:
            inner = self.feature[node] >= 0
            if not inner.any():
                return self.value[node]
            at = node[inner]
            bit = (masks[inner] >> self.feature[at]) & 1
            node[inner] = np.where(bit == 1, self.present[at], self.absent[at])


def _best_splits(z: np.ndarray, y: np.ndarray, starts: np.ndarray, min_leaf: int) -> tuple[np.ndarray, np.ndarray]:
    """For each run of rows ``starts[k]:starts[k+1]`` (one node each): the best gain and player.

    All nodes of a level at once: per-node sums are one ``reduceat`` each, so the cost is a
    few array passes per level instead of a few per node.
    """
    count = np.diff(np.append(starts, y.size)).astype(np.float64)[:, None]
    total = np.add.reduceat(y, starts)[:, None]
    with_sum = np.add.reduceat(z * y[:, None], starts, axis=0)
    with_count = np.add.reduceat(z, starts, axis=0)
    without_count = count - with_count
    ok = (with_count >= min_leaf) & (without_count >= min_leaf)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = with_sum**2 / with_count + (total - with_sum) ** 2 / without_count - total**2 / count
    gain = np.where(ok, gain, -np.inf)
    best = gain.argmax(axis=1)
    return gain[np.arange(best.size), best], best


def fit_tree(masks: np.ndarray, y: np.ndarray, n: int, *, max_leaves: int, min_leaf: int = MIN_LEAF) -> Tree:
    """Grow a least-squares tree level by level, up to ``max_leaves`` leaves.

    Each level splits every leaf whose best split removes more than a 1e-12 share of the
    total squared error — the largest gains first when the leaf budget runs short — so a
    game a few membership tests explain gets few leaves.  Leaves that cannot improve leave
    the frontier, so deep chains (airport) cost little.
    """
    z = ((masks[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(np.float64)
    feature, absent, present = [-1], [-1], [-1]
    value = [float(y.mean()) if y.size else 0.0]
    floor = 1e-12 * float(((y - y.mean()) ** 2).sum()) if y.size else 0.0
    node_of = np.zeros(y.size, dtype=np.int64)
    live = np.arange(y.size)  # rows whose leaf may still split
    leaves = 1
    while live.size and leaves < max_leaves:
        order = live[np.argsort(node_of[live], kind="stable")]
        nodes, starts = np.unique(node_of[order], return_index=True)
        gain, player = _best_splits(z[order], y[order], starts, min_leaf)
        split = np.flatnonzero(gain > floor)
        if split.size == 0:
            break
        split = split[np.argsort(-gain[split], kind="stable")][: max_leaves - leaves]
        chosen = {int(nodes[k]): int(player[k]) for k in split}
        for node, j in chosen.items():
            feature[node] = j
            for side in (0, 1):
                child = len(feature)
                feature.append(-1)
                absent.append(-1)
                present.append(-1)
                value.append(0.0)
                (absent if side == 0 else present)[node] = child
        leaves += len(chosen)
        moving = order[np.isin(node_of[order], list(chosen))]
        parents = node_of[moving]
        bit = z[moving, np.array(feature, dtype=np.int64)[parents]]
        node_of[moving] = np.where(bit == 1, np.array(present, dtype=np.int64)[parents],
                                   np.array(absent, dtype=np.int64)[parents])
        live = moving
    sums = np.bincount(node_of, weights=y, minlength=len(feature))
    counts = np.bincount(node_of, minlength=len(feature))
    for k in range(len(feature)):
        if counts[k]:
            value[k] = float(sums[k] / counts[k])
    return Tree(np.array(feature, dtype=np.int64), np.array(absent, dtype=np.int64),
                np.array(present, dtype=np.int64), np.array(value))


def tree_shapley(tree: Tree, n: int) -> np.ndarray:
    """Exact Shapley values of the game ``S ↦ tree(S)`` (module docstring's closed form)."""
    phi = np.zeros(n)
    stack: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = [(0, (), ())]
    while stack:
        node, have, lack = stack.pop()
        j = int(tree.feature[node])
        if j >= 0:
            stack.append((int(tree.absent[node]), have, lack + (j,)))
            stack.append((int(tree.present[node]), have + (j,), lack))
            continue
        p, a, c = len(have), len(lack), float(tree.value[node])
        if p + a == 0 or c == 0.0:
            continue
        whole = math.factorial(p + a)
        if p:
            phi[list(have)] += c * math.factorial(p - 1) * math.factorial(a) / whole
        if a:
            phi[list(lack)] -= c * math.factorial(p) * math.factorial(a - 1) / whole
    return phi


@dataclass(frozen=True)
class Polynomial:
    """``g(S) = b + Σ_{i∈S} w_i + Σ_{i<j ∈ S} a_ij``: a game of order ≤ 2.

    Its Shapley values are exact in closed form, ``φ_i = w_i + ½·Σ_j a_ij``: order-2 terms
    are shared equally by their two players.  ``pairs`` is empty for an additive fit.
    """

    n: int
    intercept: float
    weights: np.ndarray
    pairs: tuple[tuple[int, int], ...]
    pair_weights: np.ndarray

    def features(self, masks: np.ndarray) -> np.ndarray:
        z = ((masks[:, None] >> np.arange(self.n, dtype=np.int64)) & 1).astype(np.float64)
        if not self.pairs:
            return z
        i, j = np.array(self.pairs).T
        return np.concatenate([z, z[:, i] * z[:, j]], axis=1)

    def predict(self, masks: np.ndarray) -> np.ndarray:
        return self.intercept + self.features(masks) @ np.concatenate([self.weights, self.pair_weights])

    def shapley(self) -> np.ndarray:
        phi = self.weights.copy()
        for (i, j), a in zip(self.pairs, self.pair_weights):
            phi[i] += a / 2
            phi[j] += a / 2
        return phi


def fit_polynomial(masks: np.ndarray, y: np.ndarray, n: int) -> Polynomial:
    """Least squares of order 2 when there are at least twice as many coalitions as terms, else 1.

    A small ridge keeps the solve defined when some pair is never seen together.
    """
    terms = n + n * (n - 1) // 2
    pairs = tuple((i, j) for i in range(n) for j in range(i + 1, n)) if y.size >= 2 * terms and n <= MAX_PAIR_PLAYERS else ()
    shell = Polynomial(n, 0.0, np.zeros(n), pairs, np.zeros(len(pairs)))
    x = shell.features(masks)
    centre_x, centre_y = x.mean(axis=0), float(y.mean())
    xc = x - centre_x
    gram = xc.T @ xc
    coef = np.linalg.solve(gram + 1e-9 * (np.trace(gram) / max(1, gram.shape[0]) + 1.0) * np.eye(gram.shape[0]),
                           xc.T @ (y - centre_y))
    return Polynomial(n, centre_y - float(centre_x @ coef), coef[:n], pairs, coef[n:])


class SurrogateSampler(StratifiedSampler):
    """Stratified sampling whose final estimate uses a cross-fitted tree as control variate.

    Sampling (and every check of the stopping rule during the run) is plain stratified
    sampling; :meth:`finish`, called once at the end, fits the trees and keeps whichever of
    the two estimates has the smaller total variance.  ``params`` records which.
    """

    min_samples_per_player = 8
    """Below ``8·n`` coalitions a tree has too little to learn from: stay plain."""

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        plain_values, plain_stderr, counts = self.estimate()
        if self.samples < self.min_samples_per_player * self.n or self.exhausted:
            return plain_values, plain_stderr, counts, {"surrogate": "not used (too few coalitions)"
                                                        if not self.exhausted else "not needed (exact)"}
        masks = np.concatenate(self.kept)
        y = np.concatenate(self.kept_y)  # v − ref
        sizes = popcount(masks).astype(np.int64)
        complete = self.drawn[sizes - 1] >= self.population[sizes - 1]
        # Two folds, alternating within each size so both see every size equally.
        order = np.lexsort((np.arange(masks.size), sizes))
        fold = np.empty(masks.size, dtype=np.int64)
        fold[order] = np.arange(masks.size) % 2
        ends = np.array([0, (1 << self.n) - 1], dtype=np.int64)
        v_ends = np.array([self.v_empty - self.ref, self.v_empty + self.total - self.ref])
        # Enough leaves for a chain over every player (airport) or √m-fold detail, not more:
        # each leaf costs a split search over its rows.
        max_leaves = max(2, min(masks.size // 8, max(2 * self.n, 2 * int(np.sqrt(masks.size)))))
        best: tuple[float, np.ndarray, np.ndarray, dict[str, Any]] = (float((plain_stderr**2).sum()), plain_values,
                                                                       plain_stderr, {"surrogate": "none"})
        tolerance = 1e-12 * (abs(self.total) + float(np.abs(y).max()) + 1.0)
        for kind in ("tree", "polynomial"):
            estimates, variances, sizes_of_fit = [], [], []
            for k in (0, 1):
                # A size drawn in full is in both halves: its residual mean is exact whatever
                # the fit saw, and fitting on it teaches the small and large coalitions.
                train = (fold == k) | complete
                model, phi_model, size = self._fit(kind, np.concatenate([masks[train], ends]),
                                                   np.concatenate([y[train], v_ends]), max_leaves)
                sizes_of_fit.append(size)
                held = (fold != k) | complete
                residual = y[held] - model.predict(masks[held])
                r_ends = v_ends - model.predict(ends)
                strata = Strata(self.n)
                strata.add(masks[held], residual)
                values, variance = strata.estimate(float(r_ends[1] - r_ends[0]))
                estimates.append(phi_model + values)
                variances.append(variance)
            values = (estimates[0] + estimates[1]) / 2
            # The halves are two independent estimates: (φ₀ − φ₁)²/4 estimates the variance of
            # their mean without any model, and guards the formula where every held-out
            # residual of a stratum happened to be 0 while unseen coalitions' were not.
            variance = np.maximum((variances[0] + variances[1]) / 4, (estimates[0] - estimates[1]) ** 2 / 4)
            if variance.sum() < best[0]:
                score = float(variance.sum())  # kinds compete on their cross-fitted variance
                record: dict[str, Any] = {"surrogate": kind, "surrogate_terms": sizes_of_fit}
                if kind == "tree":
                    # RegressionMSR's move: a tree that interpolates every evaluated coalition,
                    # refitted on all of them, is the better estimate (twice the data of either
                    # half).  It is taken only when it interpolates; its stderr keeps the
                    # cross-fitted one, widened to at least the distance it moved the estimate.
                    model, refit, size = self._fit(kind, np.concatenate([masks, ends]), np.concatenate([y, v_ends]),
                                                   2 * max_leaves)
                    if np.abs(model.predict(np.concatenate([masks, ends])) - np.concatenate([y, v_ends])).max() \
                            <= tolerance:  # with ∅ and N: Σφ = v(N) − v(∅) holds for the refit
                        variance = np.maximum(variance, (refit - values) ** 2)
                        values = refit
                        record.update({"surrogate_refit": True, "surrogate_terms": sizes_of_fit + [size]})
                best = (score, values, np.sqrt(variance), record)
        return best[1], best[2], counts, best[3]

    def _fit(self, kind: str, masks: np.ndarray, y: np.ndarray,
             max_leaves: int) -> tuple[Tree | Polynomial, np.ndarray, int]:
        """A fitted model, its exact Shapley values and its size (leaves or terms)."""
        if kind == "tree":
            tree = fit_tree(masks, y, self.n, max_leaves=max_leaves)
            return tree, tree_shapley(tree, self.n), tree.leaves
        poly = fit_polynomial(masks, y, self.n)
        return poly, poly.shapley(), self.n + len(poly.pairs)
