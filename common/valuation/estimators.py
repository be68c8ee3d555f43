"""One entry point for every way of valuing the players of a game (method.md §4).

``estimate(game, estimator="auto", stop=..., seed=...)`` returns a
:class:`~common.valuation.shapley.ValuationResult` whatever the method, so reports and payouts do not
care whether values were enumerated or sampled.  The estimators, registered in
:data:`ESTIMATORS`:

* ``exact`` — Shapley by enumerating all ``2**n`` coalitions in one batch; stderr 0.
* ``stratified`` — stratified sampling by coalition size with full sample reuse
  (stratified SVARM); per-stratum stderr.  :mod:`common.valuation.stratified`.
* ``leverage`` — Leverage SHAP: constrained regression on paired coalitions spread evenly
  over sizes; stratified sandwich stderr.  :mod:`common.valuation.regression`.
* ``kernel`` — KernelSHAP: the same regression with the kernel's size distribution.
* ``permutation`` — Monte Carlo over permutations (optionally antithetic pairs, π and
  reversed π: off by default, 1.4–1.5× worse on weighted-majority games); pooled stderr.
* ``truncated`` — TMC-Shapley: each permutation is walked only until ``v(prefix) ≈ v(N)``.
* ``banzhaf`` — *Banzhaf* values (another semivalue, not efficient) by maximum sample
  reuse; stderr from the two group variances.
* ``beta`` — *Beta Shapley* values (Kwon & Zou; a semivalue, not efficient) by size-stratified
  sampling with reuse; per-stratum stderr.
* ``loo`` — leave-one-out ``v(N) − v(N∖{i})``; stderr 0.

Budgets count **distinct** coalitions per run (:class:`~common.valuation.sampling.Lookup`): a
coalition requested again in the same run is a memo hit and costs nothing.  The stratified
and regression estimators draw without replacement and enumerate the smallest and largest
coalition sizes first (the border), and every Shapley sampler enumerates outright when the
budget buys all ``2ⁿ`` coalitions, so a large enough budget always gives the exact values.

``"auto"`` (:func:`auto_estimator`) enumerates when that is affordable — ``n <=
exact_max_players`` (default :data:`EXACT_MAX_PLAYERS`, which the CLI's ``--exact-max-players``
shares) and no explicit budget below ``2ⁿ``, or any budget of at least ``2ⁿ`` — and otherwise
samples with the estimator that ``benchmarks/estimators.py`` measured most accurate at equal
budget: ``stratified``.

All randomness comes from one ``numpy.random.Generator`` seeded by ``seed``, so the same seed
on the same game gives an identical result.  Every utility goes through ``game.utilities``
in batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common.valuation.asymmetric import (
    ASYMMETRIC_MAX_PLAYERS,
    asymmetric_from_table,
    downsets,
    extension_counts,
    parse_precedence,
    predecessors,
    random_orders,
)
from common.valuation.game import Game
from common.valuation.regression import RegressionSampler
from common.valuation.sampling import (
    Lookup,
    Moments,
    Sampler,
    Seed,
    check_positive_int,
    deterministic,
    drive,
    enumerated,
    fresh_rule,
    full_mask,
    growing_batch,
    jump_variance,
    masks_of,
    pooled_variance,
    rng_and_seed,
)
from common.valuation.shapley import (
    ValuationResult,
    ValueKind,
    beta_size_weights,
    estimate_exact,
    exact_banzhaf,
    exact_semivalue,
    exact_shapley,
)
from common.valuation.stopping import CONVERGED, StoppingRule
from common.valuation.stratified import SemivalueSampler, StratifiedSampler
from common.valuation.surrogate import SurrogateSampler

__all__ = ["ESTIMATORS", "ESTIMATOR_KINDS", "EXACT_MAX_PLAYERS", "asymmetric", "auto_estimator", "banzhaf", "beta",
           "budget_buys_everything", "estimate", "exact", "kernel", "leverage", "loo", "permutation",
           "stratified", "surrogate", "truncated"]

EXACT_MAX_PLAYERS = 20
"""The largest ``n`` that ``"auto"`` enumerates exactly unless told otherwise (2²⁰ coalitions)."""

MAX_ENUMERATED_PLAYERS = 24
"""A sampling estimator whose budget covers ``2ⁿ`` enumerates instead, up to this many players."""

AUTO_SAMPLER = "surrogate"
"""What ``"auto"`` samples with when it cannot enumerate (the benchmark's most accurate)."""

PRIOR_WEIGHT = 10.0
"""Pseudo-samples of the mean player variance in each permutation stderr.  Measured on
airport, glove, SOUM and weighted-voting games (n = 8–30, budgets 300 and 2,000, 15 seeds),
pooled ±2·stderr coverage is 0.87 with one pseudo-sample (0.65 in weighted voting n = 30 at
300 evaluations: rarely pivotal players looked certain) and 0.95 with ten."""
"""What ``"auto"`` samples with when it cannot enumerate (the benchmark's most accurate)."""


# --------------------------------------------------------------------------- exact and loo


def exact(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0) -> ValuationResult:
    """Exact Shapley values from all ``2**n`` utilities, requested in one batch.

    One call lets a vectorised utility compute the whole table at once.  ``stop`` and
    ``seed`` are accepted for a uniform signature and ignored: enumeration is not iterative.
    """
    lookup = Lookup(game)
    table = lookup(np.arange(1 << game.n, dtype=np.int64))
    base = estimate_exact(game.players, table)
    return deterministic(game, lookup, base.values, base.counts, name="exact",
                         params={**base.params, "seed": rng_and_seed(seed)[1]}, kind=ValueKind.SHAPLEY)


def loo(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0) -> ValuationResult:
    """Leave-one-out values ``v(N) − v(N∖{i})`` from ``n + 1`` utilities.

    Not a Shapley value: it misses every contribution a player makes in smaller coalitions
    (two redundant owners both get ~0).  Kept as the cheap baseline the literature compares
    against.  Each value uses two utilities, hence ``counts = 2``; ``stop``/``seed`` ignored.
    """
    n = game.n
    lookup = Lookup(game)
    full = full_mask(n)
    masks = np.array([full] + [full ^ (1 << i) for i in range(n)], dtype=np.int64)
    v = lookup(masks)
    return deterministic(game, lookup, v[0] - v[1:], np.full(n, 2), name="loo",
                         params={"seed": rng_and_seed(seed)[1]}, kind=ValueKind.LOO)


# --------------------------------------------------------------------------- permutations


def _prefix_masks(perms: np.ndarray) -> np.ndarray:
    """Masks of all prefixes of each permutation, ``(m, n + 1)``, from ∅ to N.

    Bits of distinct players are distinct powers of two, so a cumulative *sum* is the
    cumulative union.
    """
    bits = np.int64(1) << perms.astype(np.int64)
    return np.concatenate([np.zeros((len(perms), 1), dtype=np.int64), np.cumsum(bits, axis=1)], axis=1)


def _prefix_values(prefixes: np.ndarray, lookup: Lookup, tolerance: float | None,
                   lookahead: int) -> tuple[np.ndarray, np.ndarray]:
    """Utilities of permutation prefixes, optionally truncated (TMC), and walk depths.

    Without ``tolerance`` all ``n + 1`` prefixes of every permutation go to the game in one
    call.  With it, ``v(∅)`` and ``v(N)`` come first, then ``lookahead`` positions at a time
    for the permutations still walking, batched across permutations; a permutation stops
    at the first prefix ``t`` with ``|v(N) − v(P_t)| < tolerance·|v(N) − v(∅)|`` and the prefixes
    after it are given ``v(P_t)`` (their marginals are 0 and never computed).  Small
    lookaheads save more utilities; larger ones make fewer, bigger calls.

    Returns ``values (m, n + 1)`` and ``depth (m,)``: the number of leading positions whose
    marginal was actually evaluated (``n`` when not truncated).
    """
    m, width = prefixes.shape
    n = width - 1
    if tolerance is None:
        return lookup(prefixes), np.full(m, n, dtype=np.int64)
    values = np.empty((m, width))
    values[:, [0, n]] = lookup(prefixes[:, [0, n]])
    v_full, v_empty = values[:, [n]], values[:, [0]]
    depth = np.full(m, n, dtype=np.int64)
    walking = ~_near(v_full, v_empty, v_empty, tolerance)[:, 0]
    depth[~walking] = 0
    k = 1
    while k < n and walking.any():
        end = min(k + lookahead, n)
        rows = np.flatnonzero(walking)
        chunk = lookup(prefixes[rows, k:end])
        values[rows, k:end] = chunk
        hit = _near(v_full[rows], v_empty[rows], chunk, tolerance)
        done = hit.any(axis=1)
        depth[rows[done]] = k + hit[done].argmax(axis=1)
        walking[rows[done]] = False
        k = end
    after = np.arange(width)[None, :] > depth[:, None]
    values = np.where(after, values[np.arange(m), depth][:, None], values)
    return values, depth


def _near(v_full: np.ndarray, v_empty: np.ndarray, v: np.ndarray, tolerance: float) -> np.ndarray:
    """TMC's truncation test ``|v(N) − v(P)| < tolerance·|v(N) − v(∅)|``, elementwise.

    Relative to what the players share, ``v(N) − v(∅)``, not to ``|v(N)|``: a utility with an
    offset (``v = 100 + Σw``) is the same game, and a tolerance relative to ``|v(N)|`` would
    truncate every permutation before its first player (all values 0, Σφ ≠ v(N) − v(∅)).
    With ``v(N) = v(∅)`` nothing is truncated: the values need not be 0 there.
    """
    return np.abs(v_full - v) < tolerance * np.abs(v_full - v_empty)


def _to_players(perms: np.ndarray, by_position: np.ndarray) -> np.ndarray:
    """Re-index a ``(m, n)`` array from permutation positions to players."""
    out = np.empty_like(by_position)
    np.put_along_axis(out, perms, by_position, axis=1)
    return out


class _PermutationSampler:
    """Permutation Monte Carlo, plain or truncated, with optional antithetic pairs.

    A sample is one permutation, or with ``antithetic`` the average over a permutation and
    its reverse: the reverse puts early players late, so their marginals are negatively
    correlated and the average has lower variance.  Each pair counts as *one* independent
    sample in the stderr.  Every permutation requests all of its ``n + 1`` prefixes; ∅ and N
    are the same for all of them and cost the budget once, so a permutation costs at most
    ``n − 1`` new evaluations.

    The stderr is the pooled one (:func:`~common.valuation.sampling.pooled_variance`): the
    mean variance over players enters every player's variance as :data:`PRIOR_WEIGHT`
    pseudo-samples, so a player whose sampled marginals happen to be all equal (never
    pivotal yet) is not reported as known exactly; and it is at least the rare-jump floor
    (:func:`~common.valuation.sampling.jump_variance`), so a player pivotal in a handful of
    permutations is not reported as known better than a handful allows.
    """

    def __init__(self, game: Game, lookup: Lookup, rng: np.random.Generator, *, batch_size: int,
                 antithetic: bool, tolerance: float | None, lookahead: int,
                 orders: Callable[[int], np.ndarray] | None = None) -> None:
        self.n = game.n
        self.orders = orders  # k → (k, n) orders to walk; uniform permutations when None
        self.lookup, self.rng = lookup, rng
        self.batch_size, self.antithetic = batch_size, antithetic
        self.tolerance, self.lookahead = tolerance, lookahead
        self.per_sample = 2 if antithetic else 1
        self.cost = self.per_sample * max(1, self.n - 1)
        self.samples = 0
        self.moments = Moments(self.n)
        self.nonzero = np.zeros(self.n, dtype=np.int64)  # samples whose marginal is not 0
        self.counts = np.zeros(self.n, dtype=np.int64)
        # ∅ and N first: every permutation shares them, so the first batch's room (budget
        # left ÷ n − 1 per permutation) is sized from what the budget really has left.
        lookup(np.array([0, full_mask(self.n)], dtype=np.int64))

    @property
    def exhausted(self) -> bool:
        return False  # permutations never run out (a run that saw all 2ⁿ coalitions ends in drive)

    def batch(self) -> int:
        # Growing like the size samplers' batches: each check (and each look-ahead round of
        # a truncated walk) has a fixed cost, so a long run makes O(log samples) of them.
        return growing_batch(self.batch_size, self.samples, 0)

    def step(self, k: int) -> None:
        base = self.orders(k) if self.orders is not None else self.rng.permuted(np.tile(np.arange(self.n), (k, 1)),
                                                                                  axis=1)
        perms = np.concatenate([base, base[:, ::-1]]) if self.antithetic else base
        values, depth = _prefix_values(_prefix_masks(perms), self.lookup, self.tolerance, self.lookahead)
        marginals = _to_players(perms, np.diff(values, axis=1))
        evaluated = _to_players(perms, np.arange(self.n)[None, :] < depth[:, None])
        self.counts += 2 * evaluated.sum(axis=0)
        sample = marginals.reshape(self.per_sample, k, self.n).mean(axis=0)
        self.moments.add(sample)
        self.nonzero += (sample != 0).sum(axis=0)
        self.samples += k

    def estimate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.moments
        spread = m.m2 / np.maximum(m.count - 1, 1)
        prior = float(spread.mean()) if m.count.max() >= 2 else np.inf
        if m.count.max() >= 2:
            variance = np.maximum(pooled_variance(m.m2, m.count, prior, PRIOR_WEIGHT),
                                  jump_variance(m.count, self.nonzero, m.mean * m.count, m.m2 + m.count * m.mean**2))
        else:
            variance = np.full(self.n, np.inf)
        with np.errstate(invalid="ignore"):
            stderr = np.sqrt(variance / np.maximum(m.count, 1))
        return m.mean.copy(), stderr, self.counts.copy()


def permutation(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0,
                batch_size: int = 8, antithetic: bool = False) -> ValuationResult:
    """Shapley values by Monte Carlo over permutations (the average marginal contribution).

    Each batch draws ``batch_size`` samples or half the samples so far, whichever is more
    (permutations, or antithetic pairs with ``antithetic=True``: they help on smooth games
    and hurt on majority games), and evaluates all prefixes of all their permutations in a
    single ``game.utilities`` call.  Every
    permutation's marginals sum to ``v(N) − v(∅)``, so the estimate is efficient up to
    rounding at any budget.  ``stderr`` = pooled sample std / √samples.  A budget that buys
    all ``2ⁿ`` coalitions is spent on enumerating them (exact).
    """
    rng, seed_record = rng_and_seed(seed)
    params = {"seed": seed_record, "batch_size": batch_size, "antithetic": bool(antithetic)}
    size = check_positive_int("batch_size", batch_size)
    return _sample(game, stop, "permutation", params, lambda lookup, _budget: _PermutationSampler(
        game, lookup, rng, batch_size=size, antithetic=bool(antithetic), tolerance=None, lookahead=game.n))


def truncated(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0,
              truncation_tolerance: float = 1e-3, lookahead: int | None = None,
              batch_size: int = 8, antithetic: bool = False) -> ValuationResult:
    """Truncated Monte Carlo Shapley (TMC-Shapley, Ghorbani & Zou 2019).

    Like :func:`permutation`, but a permutation stops being walked once its prefix is
    within ``truncation_tolerance·|v(N) − v(∅)|`` of ``v(N)``: the remaining players are assumed to
    add nothing.  On games that saturate early (a few owners already give the full model)
    this saves most utilities, at the price of a bias of at most that tolerance per
    permutation.  Prefixes are evaluated ``lookahead`` positions at a time (default
    ``max(1, n // 8)``), batched across the permutations of a batch, so truncation saves
    real evaluations.  ``counts`` include only the marginals actually evaluated.
    With ``v(N) = v(∅)`` nothing is ever truncated (the tolerance is relative to what the
    players share, so adding a constant to the utility changes nothing).
    """
    if not isinstance(truncation_tolerance, (int, float)) or not truncation_tolerance >= 0:
        raise ValueError(f"truncation_tolerance must be a non-negative number, got {truncation_tolerance!r}")
    look = max(1, game.n // 8) if lookahead is None else check_positive_int("lookahead", lookahead)
    rng, seed_record = rng_and_seed(seed)
    params = {"seed": seed_record, "batch_size": batch_size, "antithetic": bool(antithetic),
              "truncation_tolerance": float(truncation_tolerance), "lookahead": look}
    size = check_positive_int("batch_size", batch_size)
    return _sample(game, stop, "truncated", params, lambda lookup, _budget: _PermutationSampler(
        game, lookup, rng, batch_size=size, antithetic=bool(antithetic), tolerance=float(truncation_tolerance),
        lookahead=look))


class _OrderSampler(_PermutationSampler):
    """Permutation sampling over the orders a precedence allows (:func:`asymmetric`).

    Its walks request only allowed prefixes (``downsets``); once every one of them has been
    evaluated the values are exact, and :meth:`finish` computes them from those utilities.
    """

    def __init__(self, game: Game, lookup: Lookup, rng: np.random.Generator, *, batch_size: int,
                 order: tuple[tuple[int, int], ...], prefixes: np.ndarray) -> None:
        pred = predecessors(game.n, order)
        counts = extension_counts(game.n, pred)
        super().__init__(game, lookup, rng, batch_size=batch_size, antithetic=False, tolerance=None,
                         lookahead=game.n, orders=lambda k: random_orders(k, game.n, pred, counts, rng))
        self.order, self.prefixes = order, prefixes

    @property
    def exhausted(self) -> bool:
        return self.lookup.evaluations >= self.prefixes.size

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self.exhausted:
            values, stderr, counts = self.estimate()
            return values, stderr, counts, {}
        return (*_exact_asymmetric(self.lookup, self.n, self.order, self.prefixes), {})


def _exact_asymmetric(lookup: Lookup, n: int, order: tuple[tuple[int, int], ...],
                      prefixes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = np.zeros(1 << n)
    table[prefixes] = lookup(prefixes)
    return (asymmetric_from_table(table, n, order), np.zeros(n),
            np.full(n, prefixes.size, dtype=np.int64))


def asymmetric(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0,
               precedence: Sequence[str] | Sequence[tuple[str, str]] = (), batch_size: int = 8) -> ValuationResult:
    """Asymmetric Shapley values (:mod:`common.valuation.asymmetric`): marginal contributions
    averaged over the orders that respect ``precedence`` only.

    ``precedence`` is a list of specs such as ``"A<B,C"`` (A before B and C; chains and
    ``"A,B<C"`` too) or of ``(before, after)`` name pairs.  Only allowed prefixes enter the
    values: a budget that buys all of them (and no time limit) evaluates them all and the values
    are exact (``params["enumerated"]``); otherwise allowed orders are drawn uniformly and walked
    like :func:`permutation`'s, with its stderr, and a run that has seen every allowed prefix
    ends exact.  Efficiency holds either way; with no precedence the values are Shapley values.
    """
    specs = [p for p in precedence if isinstance(p, str)]
    pairs = [p for p in precedence if not isinstance(p, str)]
    order = parse_precedence([*specs, *(f"{a}<{b}" for a, b in pairs)], game.players)
    if order and game.n > ASYMMETRIC_MAX_PLAYERS:
        raise ValueError(f"asymmetric values with a precedence need at most {ASYMMETRIC_MAX_PLAYERS} owners, "
                         f"got {game.n}")
    rng, seed_record = rng_and_seed(seed)
    names = game.players
    params: dict[str, Any] = {"seed": seed_record, "batch_size": batch_size,
                              "precedence": "; ".join(f"{names[a]}<{names[b]}" for a, b in order)}
    size = check_positive_int("batch_size", batch_size)
    if not order:  # every order is allowed: Shapley values, by the permutation sampler
        return _sample(game, stop, "asymmetric", params, lambda lookup, _budget: _PermutationSampler(
            game, lookup, rng, batch_size=size, antithetic=False, tolerance=None, lookahead=game.n),
            from_table=lambda table, n: asymmetric_from_table(table, n, ()), kind=ValueKind.ASYMMETRIC)
    prefixes = np.flatnonzero(downsets(game.n, predecessors(game.n, order))).astype(np.int64)
    rule = fresh_rule(stop, game.n)
    budget = rule.max_evaluations()
    lookup = Lookup(game)
    if budget is not None and budget >= prefixes.size and rule.max_seconds() is None:
        values, _, counts = _exact_asymmetric(lookup, game.n, order, prefixes)
        return deterministic(game, lookup, values, counts, name="asymmetric",
                             params={**params, "enumerated": True, "prefixes": int(prefixes.size)},
                             kind=ValueKind.ASYMMETRIC)
    sampler = _OrderSampler(game, lookup, rng, batch_size=size, order=order, prefixes=prefixes)
    return drive(game, lookup, sampler, rule, name="asymmetric", params={**params, "prefixes": int(prefixes.size)},
                 kind=ValueKind.ASYMMETRIC)


# --------------------------------------------------------------------------- by coalition size


def stratified(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0,
               batch_size: int = 64) -> ValuationResult:
    """Shapley values by stratified sampling over coalition sizes (stratified SVARM).

    Every evaluation updates every player; sizes are enumerated from the border inwards as
    the budget allows, and the estimate is exact once it covers all ``2ⁿ`` coalitions.  Per
    stratum variances give the stderr; ``Σφ = v(N) − v(∅)`` holds at every budget.  See
    :mod:`common.valuation.stratified`.
    """
    return _by_size(game, stop, seed, batch_size, "stratified", StratifiedSampler, "per-stratum")


def surrogate(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0,
              batch_size: int = 64) -> ValuationResult:
    """Stratified sampling with a cross-fitted tree or polynomial as control variate.

    The same draws as :func:`stratified`; at the end a fit on half the coalitions gives
    exact Shapley values of the fit, and the other half estimates the residual's, both ways
    round (RegressionMSR's idea with FairPool's stratified residual estimate).  Where a fit
    explains the game (airport, unanimity sums, pairwise terms) this is far more accurate;
    where none does, the plain stratified estimate is kept (``params["surrogate"]`` says
    which).  See :mod:`common.valuation.surrogate`.
    """
    return _by_size(game, stop, seed, batch_size, "surrogate", SurrogateSampler, "per-stratum, cross-fitted")


def _by_size(game: Game, stop: StoppingRule | None, seed: Seed, batch_size: int, name: str,
             sampler: type[StratifiedSampler], stderr_method: str) -> ValuationResult:
    """Run a stratified-by-size sampler (plain or with a surrogate) under :func:`_sample`."""
    rng, seed_record = rng_and_seed(seed)
    size = check_positive_int("batch_size", batch_size)
    params = {"seed": seed_record, "batch_size": batch_size, "stderr_method": stderr_method}
    return _sample(game, stop, name, params,
                   lambda lookup, budget: sampler(game.n, lookup, rng, batch_size=size, budget=budget))


def kernel(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0,
           batch_size: int = 64) -> ValuationResult:
    """Shapley values by KernelSHAP regression (Lundberg & Lee 2017), see :mod:`common.valuation.regression`.

    Paired coalitions, sampled size by size without replacement in proportion to the Shapley
    kernel, the border enumerated as the budget allows; ``Σφ = v(N) − v(∅)`` holds exactly at
    every budget and the fit is exact once the budget covers all ``2ⁿ`` coalitions.
    ``counts`` are the coalitions the regression used (every value depends on all of them).
    """
    return _regression(game, stop, seed, batch_size, "kernel")


def leverage(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0,
             batch_size: int = 64) -> ValuationResult:
    """Shapley values by Leverage SHAP (Musco & Witter 2025), see :mod:`common.valuation.regression`.

    The same constrained regression as :func:`kernel`, with the budget spread evenly over
    coalition sizes (their leverage scores) instead of by the kernel's weight.
    """
    return _regression(game, stop, seed, batch_size, "leverage")


def _regression(game: Game, stop: StoppingRule | None, seed: Seed, batch_size: int, weights: str) -> ValuationResult:
    rng, seed_record = rng_and_seed(seed)
    size = check_positive_int("batch_size", batch_size)
    params = {"seed": seed_record, "batch_size": batch_size, "stderr_method": "stratified sandwich",
              "size_weights": weights}
    return _sample(game, stop, weights, params, lambda lookup, budget: RegressionSampler(
        game.n, lookup, rng, batch_size=size, budget=budget, size_weights=weights))


def budget_buys_everything(n: int, rule: StoppingRule) -> bool:
    """Whether ``rule`` allows all ``2ⁿ`` coalitions and sets no time limit: enumerate then.

    A time limit says the caller may not afford every evaluation the budget names (a
    reward game can take seconds per coalition), so it keeps the run sampling; the
    stratified and regression samplers still end exact if they get through every size.
    """
    budget = rule.max_evaluations()
    return (budget is not None and n <= MAX_ENUMERATED_PLAYERS and budget >= 1 << n
            and rule.max_seconds() is None)


def _sample(game: Game, stop: StoppingRule | None, name: str, params: dict[str, Any],
            make: Callable[[Lookup, int | None], Sampler], *,
            from_table: Callable[[np.ndarray, int], np.ndarray] = exact_shapley,
            kind: ValueKind = ValueKind.SHAPLEY) -> ValuationResult:
    """Run a sampler of ``kind`` values (Shapley by default) under ``stop`` — or enumerate,
    where that is cheaper or trivial; ``from_table`` gives the exact values from all ``2ⁿ``.

    A budget that buys all ``2ⁿ`` coalitions is spent on enumerating them (exact, and no
    dearer than sampling them); a one-player game has nothing to sample either.
    """
    rule = fresh_rule(stop, game.n)
    exact_table = None if from_table is exact_shapley else from_table
    if game.n == 1 or budget_buys_everything(game.n, rule):
        return enumerated(game, name=name, params=params, from_table=exact_table, kind=kind)
    lookup = Lookup(game)
    return drive(game, lookup, make(lookup, rule.max_evaluations()), rule, name=name, params=params, kind=kind,
                 from_table=from_table)


# --------------------------------------------------------------------------- Banzhaf (MSR)


class _BanzhafSampler:
    """Maximum sample reuse: every uniformly drawn coalition updates *every* player.

    ``S`` is uniform over all ``2**n`` coalitions, so for each player the samples split into
    an independent-looking "with i" and "without i" group; the Banzhaf value is the
    difference of the group means, and its stderr combines the two group variances,
    ``√(s²_in/n_in + s²_out/n_out)``.  Each sample is one utility, reused n times; a repeated
    draw costs no budget but still counts as a sample (MSR's estimate needs it).
    """

    def __init__(self, game: Game, lookup: Lookup, rng: np.random.Generator, *, batch_size: int) -> None:
        self.n, self.lookup, self.rng, self.batch_size = game.n, lookup, rng, batch_size
        self.cost = 1
        self.samples = 0
        self.inside, self.outside = Moments(self.n), Moments(self.n)

    @property
    def exhausted(self) -> bool:
        return False  # with replacement: drive ends a run that has seen all 2ⁿ coalitions

    def batch(self) -> int:
        return self.batch_size

    def step(self, k: int) -> None:
        members = self.rng.random((k, self.n)) < 0.5
        v = self.lookup(masks_of(members))
        y = np.broadcast_to(v[:, None], members.shape)
        self.inside.add(y, members)
        self.outside.add(y, ~members)
        self.samples += k

    def estimate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values = self.inside.mean - self.outside.mean
        with np.errstate(invalid="ignore"):
            stderr = np.sqrt(self.inside.stderr() ** 2 + self.outside.stderr() ** 2)
        return values, stderr, np.full(self.n, self.samples, dtype=np.int64)


def banzhaf(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0,
            batch_size: int = 128) -> ValuationResult:
    """*Banzhaf* values ``β_i = 2^{1−n} Σ_{S∌i} [v(S∪{i}) − v(S)]`` by MSR (Wang & Jia 2023).

    Banzhaf is a different semivalue from Shapley: it weighs all coalitions equally instead
    of all coalition *sizes* equally, and it is not efficient (Σβ ≠ v(N) − v(∅) in
    general), so its values must not be paid out as Shapley shares.  It is reported under
    its own estimator name, ``"banzhaf"``.  It is more robust to noisy utilities, which is
    why it is offered.  ``counts`` = coalitions sampled (each feeds every player).  Once a
    run has requested all ``2ⁿ`` coalitions, the exact values replace the estimate.
    """
    rng, seed_record = rng_and_seed(seed)
    lookup = Lookup(game)
    sampler = _BanzhafSampler(game, lookup, rng, batch_size=check_positive_int("batch_size", batch_size))
    params = {"seed": seed_record, "batch_size": batch_size, "semivalue": "banzhaf"}
    return drive(game, lookup, sampler, fresh_rule(stop, game.n), name="banzhaf", params=params,
                 kind=ValueKind.BANZHAF, from_table=exact_banzhaf)


# --------------------------------------------------------------------------- Beta Shapley


def beta(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0, alpha: float = 16.0,
         beta: float = 1.0, batch_size: int = 64) -> ValuationResult:
    """*Beta Shapley* values (Kwon & Zou 2022): the semivalue whose joined-coalition size is
    beta-binomial(α, β) (:func:`~common.valuation.shapley.beta_size_weights`).

    Beta(1, 1) is Shapley; the default Beta(16, 1) weighs a player's contribution to small
    coalitions most, where one owner's data moves the model most and the marginal is least
    drowned by saturation. Not efficient (its values do not sum to v(N) − v(∅)), so a payout
    normalises them and says so. Sampled by coalition size with full reuse, sizes allotted to
    the weights (:class:`~common.valuation.stratified.SemivalueSampler`); exact once every
    coalition is evaluated, or when the budget buys all ``2ⁿ``.
    """
    rng, seed_record = rng_and_seed(seed)
    size = check_positive_int("batch_size", batch_size)
    q = beta_size_weights(game.n, float(alpha), float(beta))
    params = {"seed": seed_record, "batch_size": batch_size, "semivalue": "beta", "alpha": float(alpha),
              "beta": float(beta), "stderr_method": "per-stratum"}
    return _sample(game, stop, "beta", params,
                   lambda lookup, budget: SemivalueSampler(game.n, lookup, rng, batch_size=size, budget=budget,
                                                           size_weights=q),
                   from_table=lambda v, n: exact_semivalue(v, n, q), kind=ValueKind.BETA)


# --------------------------------------------------------------------------- entry point

Estimator = Callable[..., ValuationResult]

ESTIMATOR_KINDS: dict[str, ValueKind] = {
    "exact": ValueKind.SHAPLEY, "surrogate": ValueKind.SHAPLEY, "stratified": ValueKind.SHAPLEY,
    "leverage": ValueKind.SHAPLEY,
    "kernel": ValueKind.SHAPLEY, "permutation": ValueKind.SHAPLEY, "truncated": ValueKind.SHAPLEY,
    "asymmetric": ValueKind.ASYMMETRIC, "banzhaf": ValueKind.BANZHAF, "beta": ValueKind.BETA, "loo": ValueKind.LOO,
}
"""The kind of values each estimator computes (a config check can refuse a payout before any work)."""

#: Every estimator by name; each takes ``(game, *, stop, seed, **params)``.
ESTIMATORS: dict[str, Estimator] = {
    "exact": exact,
    "surrogate": surrogate,
    "stratified": stratified,
    "leverage": leverage,
    "kernel": kernel,
    "permutation": permutation,
    "truncated": truncated,
    "asymmetric": asymmetric,
    "banzhaf": banzhaf,
    "beta": beta,
    "loo": loo,
}


def auto_estimator(n: int, stop: StoppingRule | None, exact_max_players: int = EXACT_MAX_PLAYERS) -> str:
    """What ``"auto"`` runs for ``n`` players under ``stop`` (``None``: no explicit budget).

    Enumerate when it is affordable: up to ``exact_max_players`` players unless the caller
    set an evaluation budget smaller than ``2ⁿ``, and at any ``n`` whose ``2ⁿ`` the budget
    covers when no time limit is set (:func:`budget_buys_everything`).
    Otherwise :data:`AUTO_SAMPLER`, the most accurate sampler per evaluation in
    ``benchmarks/estimators.py`` (see docs/valuation.md for the table).
    """
    if stop is None:
        return "exact" if n <= exact_max_players else AUTO_SAMPLER
    if budget_buys_everything(n, stop):
        return "exact"
    if n <= exact_max_players and stop.max_evaluations() is None:
        return "exact"
    return AUTO_SAMPLER


def estimate(game: Game, estimator: str = "auto", *, stop: StoppingRule | None = None, seed: Seed = 0,
             exact_max_players: int = EXACT_MAX_PLAYERS, **params: Any) -> ValuationResult:
    """Values of the players of ``game`` by the named estimator.

    Args:
        game: the game; all utilities are requested through ``game.utilities``.
        estimator: a key of :data:`ESTIMATORS`, or ``"auto"`` (:func:`auto_estimator`).
        stop: stopping rule for sampling estimators (default
            :func:`common.valuation.stopping.default_stop`); ignored by ``exact`` and ``loo``.
            Under ``"auto"``, a rule whose evaluation budget is below ``2ⁿ`` means sampling
            even where ``n <= exact_max_players``.
        seed: int or ``numpy.random.Generator``; the same int gives the same result.
        exact_max_players: the largest ``n`` for which ``"auto"`` enumerates without a budget.
        **params: estimator-specific settings (see each function), recorded in
            ``result.params`` with the seed, evaluations, samples and the rule that fired.

    A game without players has nothing to value: every estimator returns an empty,
    converged result without touching the game.
    """
    if stop is not None and not isinstance(stop, StoppingRule):
        raise TypeError(f"stop must be a StoppingRule, got {stop!r}")
    name = auto_estimator(game.n, stop, exact_max_players) if estimator == "auto" else estimator
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose 'auto' or one of {sorted(ESTIMATORS)}")
    if game.n == 0:
        empty = np.zeros(0)
        return ValuationResult((), empty, empty, np.zeros(0, dtype=np.int64), name, CONVERGED,
                               {"seed": rng_and_seed(seed)[1], "evaluations": 0, "samples": 0},
                               kind=ESTIMATOR_KINDS[name])
    result = ESTIMATORS[name](game, stop=stop, seed=seed, **params)
    if estimator == "auto":
        result = dataclasses.replace(result, params={**result.params, "auto": True})
    return result
