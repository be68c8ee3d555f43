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

from common.valuation.bits import membership, popcount
from common.valuation.stratified import SizeRuns, Strata, StratifiedSampler

__all__ = ["SurrogateSampler", "Tree", "fit_tree", "tree_shapley"]

MIN_LEAF = 1
"""Fewest coalitions a leaf may hold."""

CHI2_1_95 = 3.841
"""95% point of χ² on one degree of freedom: how far the two halves may disagree before the
stderr formula is taken to be wrong."""

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


DENSE_LEVEL_NODES = 8
"""Up to this many nodes to sum in a level, the per-node sums are one matrix product
(``nodes × rows`` one-hot times the row statistics); beyond, a sort by node and one
``reduceat`` over just those nodes' rows, whose cost does not grow with the nodes."""


def _level_sums(stats: np.ndarray, slot: np.ndarray, live: np.ndarray, nodes: int) -> np.ndarray:
    """Per-node column sums of ``stats`` over the ``live`` rows; ``slot[row]`` is the row's node."""
    if nodes <= DENSE_LEVEL_NODES:
        onehot = np.zeros((nodes, stats.shape[0]))
        onehot[slot[live], live] = 1.0
        return onehot @ stats
    order = live[np.argsort(slot[live], kind="stable")]
    local = slot[order]
    starts = np.flatnonzero(np.diff(local, prepend=-1))
    sums = np.zeros((nodes, stats.shape[1]))
    sums[local[starts]] = np.add.reduceat(stats[order], starts, axis=0)
    return sums


class TreeDesign:
    """Membership bits and per-row statistics ``[z, z·y, y, 1]`` of every evaluated coalition.

    Why: built once, they serve every tree fitted to a subset of the rows — the two
    cross-fitted halves and the refit on all of them.
    """

    def __init__(self, masks: np.ndarray, y: np.ndarray, n: int) -> None:
        self.n, self.y = n, y
        self.stats = np.empty((y.size, 2 * n + 2))
        self.stats[:, :n] = membership(masks, n, np.uint8)
        np.multiply(self.stats[:, :n], y[:, None], out=self.stats[:, n:2 * n])
        self.stats[:, 2 * n], self.stats[:, 2 * n + 1] = y, 1.0
        self.z = self.stats[:, :n]

    def fit(self, rows: np.ndarray | None = None, *, max_leaves: int, min_leaf: int = MIN_LEAF) -> Tree:
        """Grow a least-squares tree on ``rows`` (a boolean selector; all when None), level by
        level, up to ``max_leaves`` leaves.

        Each level splits every leaf whose best split removes more than a 1e-12 share of the
        total squared error — the largest gains first when the leaf budget runs short — so a
        game a few membership tests explain gets few leaves.  Leaves that cannot improve
        leave the frontier, so deep chains (airport) cost little.  All nodes of a level are
        scored at once from per-node sums of the row statistics (:func:`_level_sums`).
        """
        n, z, y, stats = self.n, self.z, self.y, self.stats
        if rows is not None:  # one gather here rather than one per level
            z, y, stats = z[rows], y[rows], stats[rows]
        feature, absent, present = [-1], [-1], [-1]
        floor = 1e-12 * float(((y - y.mean()) ** 2).sum()) if y.size else 0.0
        node_of = np.zeros(y.size, dtype=np.int64)
        live = np.arange(y.size)  # rows whose leaf may still split
        frontier = np.zeros(1, dtype=np.int64)  # those leaves
        sums = stats.sum(axis=0, keepdims=True)  # per frontier leaf
        leaves = 1
        while live.size and leaves < max_leaves:
            with_count, with_sum = sums[:, :n], sums[:, n:2 * n]
            total, count = sums[:, 2 * n:2 * n + 1], sums[:, 2 * n + 1:]
            without_count = count - with_count
            ok = (with_count >= min_leaf) & (without_count >= min_leaf)
            with np.errstate(divide="ignore", invalid="ignore"):
                gain = with_sum**2 / with_count + (total - with_sum) ** 2 / without_count - total**2 / count
            gain = np.where(ok, gain, -np.inf)
            player = gain.argmax(axis=1)
            gain = gain[np.arange(player.size), player]
            split = np.flatnonzero(gain > floor)
            if split.size == 0:
                break
            split = split[np.argsort(-gain[split], kind="stable")][: max_leaves - leaves]
            first = len(feature)
            for k in split:
                node = int(frontier[k])
                feature[node] = int(player[k])
                absent[node], present[node] = len(feature), len(feature) + 1
                feature += [-1, -1]
                absent += [-1, -1]
                present += [-1, -1]
            leaves += split.size
            chosen = np.zeros(len(feature), dtype=bool)
            chosen[frontier[split]] = True
            moving = live[chosen[node_of[live]]]
            parents = node_of[moving]
            bit = z[moving, np.array(feature, dtype=np.int64)[parents]]
            node_of[moving] = np.where(bit == 1, np.array(present, dtype=np.int64)[parents],
                                       np.array(absent, dtype=np.int64)[parents])
            live = moving
            # The histogram-subtraction trick: sum over the smaller child of each split only;
            # its sibling is the parent minus it — at most half the rows per level.
            frontier = np.arange(first, len(feature), dtype=np.int64)  # absent, present per split
            present_smaller = with_count[split, player[split]] <= without_count[split, player[split]]
            small = frontier[1::2] * present_smaller + frontier[0::2] * ~present_smaller
            slot_of_node = np.full(len(feature), -1, dtype=np.int64)
            slot_of_node[small] = np.arange(split.size)
            slot = slot_of_node[node_of]
            small_sums = _level_sums(stats, slot, live[slot[live] >= 0], split.size)
            big_sums = sums[split] - small_sums
            sums = np.empty((frontier.size, stats.shape[1]))
            sums[1::2] = np.where(present_smaller[:, None], small_sums, big_sums)
            sums[0::2] = np.where(present_smaller[:, None], big_sums, small_sums)
        sums_y = np.bincount(node_of, weights=y, minlength=len(feature))
        counts = np.bincount(node_of, minlength=len(feature))
        value = np.where(counts > 0, sums_y / np.maximum(counts, 1), 0.0)
        return Tree(np.array(feature, dtype=np.int64), np.array(absent, dtype=np.int64),
                    np.array(present, dtype=np.int64), value)


def fit_tree(masks: np.ndarray, y: np.ndarray, n: int, *, max_leaves: int, min_leaf: int = MIN_LEAF) -> Tree:
    """A least-squares tree on every given coalition (:meth:`TreeDesign.fit`)."""
    return TreeDesign(masks, y, n).fit(max_leaves=max_leaves, min_leaf=min_leaf)


def tree_shapley(tree: Tree, n: int) -> np.ndarray:
    """Exact Shapley values of the game ``S ↦ tree(S)`` (module docstring's closed form).

    Children are numbered after their parent, so one pass in node order gives every node's
    path — the players it requires present and absent — and the leaves' closed-form weights
    then sum in two matrix products.
    """
    nodes = tree.feature.size
    have = np.zeros((nodes, n), dtype=bool)
    lack = np.zeros((nodes, n), dtype=bool)
    for node in np.flatnonzero(tree.feature >= 0):
        j, off, on = int(tree.feature[node]), int(tree.absent[node]), int(tree.present[node])
        have[off], lack[off] = have[node], lack[node]
        have[on], lack[on] = have[node], lack[node]
        lack[off, j] = True
        have[on, j] = True
    leaf = (tree.feature < 0) & (tree.value != 0.0)
    p, a, c = have[leaf].sum(axis=1), lack[leaf].sum(axis=1), tree.value[leaf]
    # (p−1)!·a!/(p+a)! and p!·(a−1)!/(p+a)!, as 1/(p·C(p+a, p)) and 1/(a·C(p+a, a)).
    with_weight = np.array([cv / (pv * math.comb(pv + av, pv)) if pv else 0.0 for pv, av, cv in zip(p, a, c)])
    without_weight = np.array([cv / (av * math.comb(pv + av, av)) if av else 0.0 for pv, av, cv in zip(p, a, c)])
    return have[leaf].T.astype(np.float64) @ with_weight - lack[leaf].T.astype(np.float64) @ without_weight


@dataclass(frozen=True)
class Polynomial:
    """``g(S) = b + Σ_{i∈S} w_i + Σ_{i<j ∈ S} a_ij``: a game of order ≤ 2.

    Its Shapley values are exact in closed form: ``φ_i = w_i + Σ_j a_ij / 2`` — pair terms
    are shared equally by their two players.  ``interactions`` is the symmetric matrix of
    the ``a_ij`` (zero diagonal), all zero for an additive fit; kept as a matrix so that a
    prediction is two small products, ``z·w + ½·Σ (zA)∘z``, instead of one column per pair.
    """

    intercept: float
    weights: np.ndarray
    interactions: np.ndarray
    terms: int

    def predict(self, masks: np.ndarray) -> np.ndarray:
        z = membership(masks, self.weights.size)
        return self.intercept + z @ self.weights + 0.5 * ((z @ self.interactions) * z).sum(axis=1)

    def shapley(self) -> np.ndarray:
        return self.weights + self.interactions.sum(axis=1) / 2


class PolynomialDesign:
    """The order-≤2 features of every evaluated coalition, built once for all the fits.

    Why: the features are the cost of a polynomial fit (one column per pair), and the
    cross-fitted halves overlap.  Features are 0/1 and their products counts, exact in
    float32 far beyond any budget, so the Gram matrix runs at single-precision speed and
    is solved in double.
    """

    def __init__(self, masks: np.ndarray, y: np.ndarray, n: int, *, pairs: bool) -> None:
        self.n, self.y = n, y
        z = membership(masks, n, np.float32)
        self.i, self.j = np.triu_indices(n, 1) if pairs else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        zt = np.ascontiguousarray(z.T)
        self.x = np.concatenate([zt, zt[self.i] * zt[self.j]]).T  # rows × (n + pairs)

    def fit(self, rows: np.ndarray) -> Polynomial:
        """Least squares on ``rows`` (a boolean selector), with pair terms when there are at least
        twice as many coalitions as terms.  A small ridge keeps the solve defined when some
        pair is never seen together."""
        n = self.n
        use_pairs = self.i.size > 0 and int(rows.sum()) >= 2 * (n + self.i.size)
        x = self.x[rows] if use_pairs else self.x[rows, :n]
        y = self.y[rows]
        m = float(y.size)
        sx = x.sum(axis=0, dtype=np.float64)
        gram = (x.T @ x).astype(np.float64) - np.outer(sx, sx) / m
        centre_y = float(y.mean())
        cross = x.T.astype(np.float64) @ (y - centre_y)
        ridge = 1e-9 * (np.trace(gram) / max(1, gram.shape[0]) + 1.0)
        coef = np.linalg.solve(gram + ridge * np.eye(gram.shape[0]), cross)
        interactions = np.zeros((n, n))
        if use_pairs:
            interactions[self.i, self.j] = coef[n:]
            interactions[self.j, self.i] = coef[n:]
        return Polynomial(centre_y - float(sx @ coef) / m, coef[:n].copy(), interactions, coef.size)


def fit_polynomial(masks: np.ndarray, y: np.ndarray, n: int) -> Polynomial:
    """Least squares of order 2 when there are at least twice as many coalitions as terms, else 1."""
    design = PolynomialDesign(masks, y, n, pairs=n <= MAX_PAIR_PLAYERS)
    return design.fit(np.ones(y.size, dtype=bool))


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
        every = np.concatenate([masks, ends])
        y_every = np.concatenate([y, v_ends])
        helds = [(fold != k) | complete for k in (0, 1)]
        runs = [SizeRuns.of(masks[held], self.n) for held in helds]  # shared by both kinds
        trees = TreeDesign(every, y_every, self.n)
        design: PolynomialDesign | None = None
        for kind in ("tree", "polynomial"):
            if kind == "polynomial":
                design = PolynomialDesign(every, y_every, self.n, pairs=self.n <= MAX_PAIR_PLAYERS)
            estimates, variances, sizes_of_fit = [], [], []
            for k in (0, 1):
                # A size drawn in full is in both halves: its residual mean is exact whatever
                # the fit saw, and fitting on it teaches the small and large coalitions.
                # ∅ and N are in every fit.
                train = np.append((fold == k) | complete, [True, True])
                model = trees.fit(train, max_leaves=max_leaves) if design is None else design.fit(train)
                sizes_of_fit.append(model.leaves if isinstance(model, Tree) else model.terms)
                held = helds[k]
                residual = y[held] - model.predict(masks[held])
                r_ends = v_ends - model.predict(ends)
                strata = Strata(self.n)
                strata.add(masks[held], residual, runs[k])
                values, variance = strata.estimate(float(r_ends[1] - r_ends[0]))
                estimates.append(shapley_of(model, self.n) + values)
                variances.append(variance)
            values = (estimates[0] + estimates[1]) / 2
            # The halves are two independent estimates: (φ₀ − φ₁)²/4 estimates the variance of
            # their mean without any model, on one degree of freedom.  It replaces the formula
            # only where it rejects it (above the χ²₁ 95% point times the formula), e.g. where
            # every held-out residual of a stratum happened to be 0 while unseen coalitions'
            # were not; always taking the larger of the two would overstate a right formula.
            formula = (variances[0] + variances[1]) / 4
            split_half = (estimates[0] - estimates[1]) ** 2 / 4
            variance = np.where(split_half > CHI2_1_95 * formula, split_half, formula)
            if variance.sum() < best[0]:
                score = float(variance.sum())  # kinds compete on their cross-fitted variance
                record: dict[str, Any] = {"surrogate": kind, "surrogate_terms": sizes_of_fit}
                if kind == "tree":
                    # RegressionMSR's move: a tree that interpolates every evaluated coalition,
                    # refitted on all of them, is the better estimate (twice the data of either
                    # half).  It is taken only when it interpolates; its stderr keeps the
                    # cross-fitted one, widened to at least the distance it moved the estimate.
                    tree = trees.fit(max_leaves=2 * max_leaves)
                    if np.abs(tree.predict(every) - y_every).max() <= tolerance:
                        # with ∅ and N among them, Σφ = v(N) − v(∅) holds for the refit
                        refit = tree_shapley(tree, self.n)
                        variance = np.maximum(variance, (refit - values) ** 2)
                        values = refit
                        record.update({"surrogate_refit": True, "surrogate_terms": sizes_of_fit + [tree.leaves]})
                best = (score, values, np.sqrt(variance), record)
        return best[1], best[2], counts, best[3]


def shapley_of(model: Tree | Polynomial, n: int) -> np.ndarray:
    """Exact Shapley values of a fitted surrogate."""
    return tree_shapley(model, n) if isinstance(model, Tree) else model.shapley()
