"""One entry point for every way of valuing the players of a game (method.md §4).

``estimate(game, estimator="auto", stop=..., seed=...)`` returns a
:class:`~common.valuation.shapley.ValuationResult` whatever the method, so reports and payouts do not
care whether values were enumerated or sampled.  The estimators, registered in
:data:`ESTIMATORS`:

* ``exact`` — Shapley by enumerating all ``2**n`` coalitions in one batch; stderr 0.
* ``permutation`` — Monte Carlo over permutations with antithetic pairs (π and reversed π);
  stderr across pairs.
* ``truncated`` — TMC-Shapley: each permutation is walked only until ``v(prefix) ≈ v(N)``;
  stderr across samples.
* ``kernel`` — KernelSHAP: paired kernel sampling, least squares with efficiency imposed
  exactly; analytic sandwich (delta-method) stderr.
* ``banzhaf`` — *Banzhaf* values (another semivalue, not efficient) by maximum sample
  reuse; stderr from the two group variances.
* ``loo`` — leave-one-out ``v(N) − v(N∖{i})``; stderr 0.

``"auto"`` picks ``exact`` when ``n <= exact_max_players`` (default :data:`EXACT_MAX_PLAYERS`,
which the CLI's ``--exact-max-players`` shares: the preference utility makes ``2**n`` coalitions
cheap up to n ≈ 20) and ``permutation`` otherwise.

Sampling estimators share one driver (:func:`_drive`): draw a batch, update the estimate,
check the stopping rule (:mod:`common.valuation.stopping`), repeat.  All randomness comes from one
``numpy.random.Generator`` seeded by ``seed``, so the same seed on the same game gives an
identical result.  Every utility goes through ``game.utilities`` in batches; the game's memo
makes repeated coalitions free, which is why budgets count *requested* evaluations
(reproducible) and ``game.computed`` counts what really had to be computed.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from common.valuation.game import Game
from common.valuation.shapley import ValuationResult, ValueKind, estimate_exact
from common.valuation.stopping import (
    CONVERGED,
    StoppingRule,
    StopState,
    default_stop,
    status_of,
)

__all__ = ["ESTIMATORS", "EXACT_MAX_PLAYERS", "estimate", "exact", "permutation", "truncated", "kernel", "banzhaf",
           "loo"]

Seed = int | np.random.Generator

EXACT_MAX_PLAYERS = 20
"""The largest ``n`` that ``"auto"`` enumerates exactly unless told otherwise (2²⁰ coalitions)."""


# --------------------------------------------------------------------------- plumbing


class _Lookup:
    """``game.utilities`` that counts what the estimator requested (memo hits included)."""

    def __init__(self, game: Game) -> None:
        self.game = game
        self.evaluations = 0

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, dtype=np.int64)
        self.evaluations += int(masks.size)
        return self.game.utilities(masks.ravel()).reshape(masks.shape)


def _masks_of(members: np.ndarray) -> np.ndarray:
    """Coalition masks of the rows of a boolean membership matrix."""
    n = members.shape[1]
    return members.astype(np.int64) @ (np.int64(1) << np.arange(n, dtype=np.int64))


def _full(n: int) -> int:
    return (1 << n) - 1


def _rng_and_seed(seed: Seed) -> tuple[np.random.Generator, Any]:
    """The generator to draw from and a JSON-friendly record of the seed."""
    if isinstance(seed, np.random.Generator):
        return seed, repr(seed)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed)), int(seed)


class _Moments:
    """Per-player running count, mean and sum of squared deviations (Chan et al.).

    Batches are merged exactly, so the mean and variance do not depend on how the samples
    were split into batches, and the update is stable where naive ``Σx²`` would cancel.
    ``where`` selects which entries of a batch belong to each player (Banzhaf MSR splits the
    samples into coalitions with and without the player).
    """

    def __init__(self, n: int) -> None:
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)

    def add(self, x: np.ndarray, where: np.ndarray | None = None) -> None:
        x = np.asarray(x, dtype=np.float64)
        w = np.ones(x.shape, dtype=bool) if where is None else np.broadcast_to(where, x.shape)
        nb = w.sum(axis=0)
        mean_b = np.where(w, x, 0.0).sum(axis=0) / np.maximum(nb, 1)
        m2_b = np.where(w, (x - mean_b) ** 2, 0.0).sum(axis=0)
        total = self.count + nb
        safe = np.maximum(total, 1)
        delta = mean_b - self.mean
        self.mean = self.mean + delta * nb / safe
        self.m2 = self.m2 + m2_b + delta**2 * self.count * nb / safe
        self.count = total

    def variance(self) -> np.ndarray:
        """Sample variance (ddof 1); ``inf`` where fewer than two samples make it undefined."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.count >= 2, self.m2 / np.maximum(self.count - 1, 1), np.inf)

    def stderr(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(self.variance() / np.maximum(self.count, 1))


class _Sampler(Protocol):
    """What :func:`_drive` needs from a sampling estimator."""

    cost: int
    """Upper bound on the utilities one sample requests (to size batches to a budget)."""
    samples: int
    """Independent samples drawn so far."""

    def batch(self) -> int:
        """Preferred number of samples in the next batch."""

    def step(self, k: int) -> None:
        """Draw ``k`` samples and evaluate their coalitions."""

    def estimate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Current ``(values, stderr, counts)``."""


def _drive(game: Game, lookup: _Lookup, sampler: _Sampler, stop: StoppingRule | None, *,
           name: str, params: dict[str, Any]) -> ValuationResult:
    """Run ``sampler`` batch by batch until ``stop`` fires; package the result.

    The rule is deep-copied and reset so the caller's object never carries state from one
    run into another.  Each batch is capped by the rule's :meth:`samples_left` (but is at
    least one sample, so every check sees progress).
    """
    rule = copy.deepcopy(stop if stop is not None else default_stop(game.n))
    rule.reset()
    start = time.perf_counter()
    iteration = 0
    snapshots: list[dict[str, Any]] = []
    while True:
        k = sampler.batch()
        room = rule.samples_left(lookup.evaluations, sampler.samples, sampler.cost)
        if room is not None:
            k = max(1, min(k, room))
        sampler.step(k)
        iteration += 1
        values, stderr, counts = sampler.estimate()
        state = StopState(values=values, stderr=stderr, counts=counts, evaluations=lookup.evaluations,
                          samples=sampler.samples, elapsed=time.perf_counter() - start, iteration=iteration)
        snapshots.append(_snapshot(game.players, lookup.evaluations, values, stderr))
        fired = rule.check(state)
        if fired:
            break
    record = {**params, "evaluations": lookup.evaluations, "samples": sampler.samples,
              "iterations": iteration, "stop": repr(rule), "stopped_by": [repr(r) for r in fired]}
    return ValuationResult(game.players, values, stderr, counts, name, status_of(fired), record,
                           trace=thin_trace(snapshots), kind=ESTIMATOR_KINDS[name])


TRACE_MAX_POINTS = 200
"""Snapshots kept of a sampling run (a long run has thousands of iterations)."""


def _snapshot(players: Sequence[str], evaluations: int, values: np.ndarray, stderr: np.ndarray) -> dict[str, Any]:
    """One point of the convergence trace; a non-finite stderr (first iterations) is ``None``."""
    return {"evaluations": int(evaluations),
            "values": {p: float(v) for p, v in zip(players, values)},
            "stderr": {p: (float(e) if np.isfinite(e) else None) for p, e in zip(players, stderr)}}


def thin_trace(snapshots: list[dict[str, Any]], limit: int = TRACE_MAX_POINTS) -> tuple[dict[str, Any], ...]:
    """At most ``limit`` snapshots, evenly spaced, always keeping the first and the last."""
    if len(snapshots) <= limit:
        return tuple(snapshots)
    keep = np.unique(np.round(np.linspace(0, len(snapshots) - 1, limit)).astype(int))
    return tuple(snapshots[i] for i in keep)


def _deterministic(game: Game, lookup: _Lookup, values: np.ndarray, counts: np.ndarray, *,
                   name: str, params: dict[str, Any]) -> ValuationResult:
    """Result of a method that computes its values outright (no sampling, stderr 0)."""
    record = {**params, "evaluations": lookup.evaluations, "samples": 0, "iterations": 1,
              "stop": None, "stopped_by": []}
    n = game.n
    return ValuationResult(game.players, values, np.zeros(n), counts, name, CONVERGED, record,
                           kind=ESTIMATOR_KINDS[name])


# --------------------------------------------------------------------------- exact and loo


def exact(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0) -> ValuationResult:
    """Exact Shapley values from all ``2**n`` utilities, requested in one batch.

    One call lets a vectorised utility compute the whole table at once.  ``stop`` and
    ``seed`` are accepted for a uniform signature and ignored: enumeration is not iterative.
    """
    lookup = _Lookup(game)
    table = lookup(np.arange(1 << game.n, dtype=np.int64))
    base = estimate_exact(game.players, table)
    return _deterministic(game, lookup, base.values, base.counts, name="exact",
                          params={**base.params, "seed": _rng_and_seed(seed)[1]})


def loo(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0) -> ValuationResult:
    """Leave-one-out values ``v(N) − v(N∖{i})`` from ``n + 1`` utilities.

    Not a Shapley value: it misses every contribution a player makes in smaller coalitions
    (two redundant owners both get ~0).  Kept as the cheap baseline the literature compares
    against.  Each value uses two utilities, hence ``counts = 2``; ``stop``/``seed`` ignored.
    """
    n = game.n
    lookup = _Lookup(game)
    full = _full(n)
    masks = np.array([full] + [full ^ (1 << i) for i in range(n)], dtype=np.int64)
    v = lookup(masks)
    return _deterministic(game, lookup, v[0] - v[1:], np.full(n, 2), name="loo",
                          params={"seed": _rng_and_seed(seed)[1]})


# --------------------------------------------------------------------------- permutations


def _prefix_masks(perms: np.ndarray) -> np.ndarray:
    """Masks of all prefixes of each permutation, ``(m, n + 1)``, from ∅ to N.

    Bits of distinct players are distinct powers of two, so a cumulative *sum* is the
    cumulative union.
    """
    bits = np.int64(1) << perms.astype(np.int64)
    return np.concatenate([np.zeros((len(perms), 1), dtype=np.int64), np.cumsum(bits, axis=1)], axis=1)


def _prefix_values(prefixes: np.ndarray, lookup: _Lookup, tolerance: float | None,
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
    sample in the stderr.  Every permutation requests all of its ``n + 1`` prefixes (∅ and N
    are memo hits after the first time), so each marginal is fed by exactly two utilities.
    """

    def __init__(self, game: Game, lookup: _Lookup, rng: np.random.Generator, *, batch_size: int,
                 antithetic: bool, tolerance: float | None, lookahead: int) -> None:
        self.n = game.n
        self.lookup, self.rng = lookup, rng
        self.batch_size, self.antithetic = batch_size, antithetic
        self.tolerance, self.lookahead = tolerance, lookahead
        self.per_sample = 2 if antithetic else 1
        self.cost = self.per_sample * (self.n + 1)
        self.samples = 0
        self.moments = _Moments(self.n)
        self.counts = np.zeros(self.n, dtype=np.int64)

    def batch(self) -> int:
        return self.batch_size

    def step(self, k: int) -> None:
        base = self.rng.permuted(np.tile(np.arange(self.n), (k, 1)), axis=1)
        perms = np.concatenate([base, base[:, ::-1]]) if self.antithetic else base
        values, depth = _prefix_values(_prefix_masks(perms), self.lookup, self.tolerance, self.lookahead)
        marginals = _to_players(perms, np.diff(values, axis=1))
        evaluated = _to_players(perms, np.arange(self.n)[None, :] < depth[:, None])
        self.counts += 2 * evaluated.sum(axis=0)
        self.moments.add(marginals.reshape(self.per_sample, k, self.n).mean(axis=0))
        self.samples += k

    def estimate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.moments.mean.copy(), self.moments.stderr(), self.counts.copy()


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def permutation(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0,
                batch_size: int = 8, antithetic: bool = True) -> ValuationResult:
    """Shapley values by Monte Carlo over permutations (the average marginal contribution).

    Each batch draws ``batch_size`` samples (antithetic pairs by default) and evaluates all
    prefixes of all their permutations in a single ``game.utilities`` call.  Every
    permutation's marginals sum to ``v(N) − v(∅)``, so the estimate is efficient up to
    rounding at any budget.  ``stderr`` = sample std / √samples.
    """
    rng, seed_record = _rng_and_seed(seed)
    lookup = _Lookup(game)
    sampler = _PermutationSampler(game, lookup, rng, batch_size=_check_positive_int("batch_size", batch_size),
                                  antithetic=bool(antithetic), tolerance=None, lookahead=game.n)
    params = {"seed": seed_record, "batch_size": batch_size, "antithetic": bool(antithetic)}
    return _drive(game, lookup, sampler, stop, name="permutation", params=params)


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
    look = max(1, game.n // 8) if lookahead is None else _check_positive_int("lookahead", lookahead)
    rng, seed_record = _rng_and_seed(seed)
    lookup = _Lookup(game)
    sampler = _PermutationSampler(game, lookup, rng, batch_size=_check_positive_int("batch_size", batch_size),
                                  antithetic=bool(antithetic), tolerance=float(truncation_tolerance),
                                  lookahead=look)
    params = {"seed": seed_record, "batch_size": batch_size, "antithetic": bool(antithetic),
              "truncation_tolerance": float(truncation_tolerance), "lookahead": look}
    return _drive(game, lookup, sampler, stop, name="truncated", params=params)


# --------------------------------------------------------------------------- KernelSHAP


class _KernelSampler:
    """KernelSHAP with paired sampling and the efficiency constraint imposed exactly.

    Coalitions ``S`` are drawn from the Shapley kernel itself (size ``s ∈ 1..n−1`` with
    probability ∝ ``1/(s(n−s))``, then uniformly among sets of that size), so the weighted
    least-squares problem becomes an *unweighted* average over samples.  Each draw also
    adds its complement (paired sampling: the two errors largely cancel).  With one
    sample = one pair, ``p``, and ``z`` the membership vector, the estimate solves

        min_φ  Σ_p Σ_{S∈p} (v(S) − v(∅) − zᵀφ)²   s.t.  Σφ = v(N) − v(∅)

    through its KKT system ``K = [[Ā, 1], [1ᵀ, 0]]``, ``Ā = mean_p Σ_{S∈p} z zᵀ``.

    The stderr is the analytic *sandwich* (delta-method) estimate, not a bootstrap: the
    solution is a smooth function of the pair averages, and perturbing the KKT system gives
    ``δφ = Q·mean_p(g_p)`` with ``Q`` the top-left ``n×n`` block of ``K⁻¹`` and
    ``g_p = Σ_{S∈p} z (v(S) − v(∅) − zᵀφ)`` the per-pair score, hence
    ``Var φ ≈ Q Cov(g) Q / #pairs``.  It costs one pass over the samples per check instead
    of ~50 re-solves, and is exactly 0 when the game is additive (the fit is perfect).
    """

    def __init__(self, game: Game, lookup: _Lookup, rng: np.random.Generator, *, batch_size: int) -> None:
        n = self.n = game.n
        self.lookup, self.rng, self.batch_size = lookup, rng, batch_size
        self.cost = 2
        self.samples = 0
        ends = lookup(np.array([0, _full(n)], dtype=np.int64))
        self.v_empty, self.total = float(ends[0]), float(ends[1] - ends[0])
        sizes = np.arange(1, n)
        weights = 1.0 / (sizes * (n - sizes))
        self.sizes, self.size_p = sizes, weights / weights.sum()
        self.members: list[np.ndarray] = []  # one (k, n) bool block per batch
        self.targets: list[np.ndarray] = []  # one (k, 2) block: v(S) − v(∅), v(Sᶜ) − v(∅)

    def batch(self) -> int:
        # A check costs one pass over all pairs, so batches grow with the sample count:
        # the total checking cost stays O(samples · n · log samples).
        return max(self.batch_size, self.samples // 8)

    def step(self, k: int) -> None:
        n = self.n
        size = self.rng.choice(self.sizes, size=k, p=self.size_p)
        ranks = self.rng.random((k, n)).argsort(axis=1).argsort(axis=1)
        members = ranks < size[:, None]  # a uniform subset of the drawn size
        masks = _masks_of(members)
        v = self.lookup(np.stack([masks, _full(n) ^ masks], axis=1))
        self.members.append(members)
        self.targets.append(v - self.v_empty)
        self.samples += k

    def estimate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, m = self.n, self.samples
        z = np.concatenate(self.members).astype(np.float64)
        y = np.concatenate(self.targets)
        zc = 1.0 - z
        a_bar = (z.T @ z + zc.T @ zc) / m
        b_bar = (z.T @ y[:, 0] + zc.T @ y[:, 1]) / m
        kkt = np.block([[a_bar, np.ones((n, 1))], [np.ones((1, n)), np.zeros((1, 1))]])
        kkt_inv = np.linalg.pinv(kkt)
        phi = kkt_inv @ np.append(b_bar, self.total)
        phi = phi[:n]
        phi += (self.total - phi.sum()) / n  # pinv rounding: keep efficiency to the last bit
        counts = np.full(n, 2 * m + 2, dtype=np.int64)
        if m <= n:  # no more pairs than unknowns: the fit can interpolate them, leaving no residual
            return phi, np.full(n, np.inf), counts  # to measure, so the error is not known yet
        scores = z * (y[:, 0] - z @ phi)[:, None] + zc * (y[:, 1] - zc @ phi)[:, None]
        h = (scores - scores.mean(axis=0)) @ kkt_inv[:n, :n]
        stderr = np.sqrt((h**2).sum(axis=0) / (m - 1) / m)
        return phi, stderr, counts


def kernel(game: Game, *, stop: StoppingRule | None = None, seed: Seed = 0,
           batch_size: int = 64) -> ValuationResult:
    """Shapley values by KernelSHAP regression (Lundberg & Lee 2017), see :class:`_KernelSampler`.

    ``Σφ = v(N) − v(∅)`` holds exactly at every budget.  ``batch_size`` coalition pairs are
    drawn per batch at first (batches then grow with the sample count); ``counts`` are the
    coalitions the regression used (all pairs plus ∅ and N), since every value depends on
    all of them.  With one player there is nothing to sample and the constraint alone
    gives ``φ = v(N) − v(∅)``.
    """
    rng, seed_record = _rng_and_seed(seed)
    params = {"seed": seed_record, "batch_size": batch_size, "stderr_method": "sandwich"}
    if game.n == 1:
        lookup = _Lookup(game)
        v = lookup(np.array([0, 1], dtype=np.int64))
        return _deterministic(game, lookup, np.array([v[1] - v[0]]), np.array([2]), name="kernel", params=params)
    lookup = _Lookup(game)
    sampler = _KernelSampler(game, lookup, rng, batch_size=_check_positive_int("batch_size", batch_size))
    return _drive(game, lookup, sampler, stop, name="kernel", params=params)


# --------------------------------------------------------------------------- Banzhaf (MSR)


class _BanzhafSampler:
    """Maximum sample reuse: every uniformly drawn coalition updates *every* player.

    ``S`` is uniform over all ``2**n`` coalitions, so for each player the samples split into
    an independent-looking "with i" and "without i" group; the Banzhaf value is the
    difference of the group means, and its stderr combines the two group variances,
    ``√(s²_in/n_in + s²_out/n_out)``.  Each sample is one utility, reused n times.
    """

    def __init__(self, game: Game, lookup: _Lookup, rng: np.random.Generator, *, batch_size: int) -> None:
        self.n, self.lookup, self.rng, self.batch_size = game.n, lookup, rng, batch_size
        self.cost = 1
        self.samples = 0
        self.inside, self.outside = _Moments(self.n), _Moments(self.n)

    def batch(self) -> int:
        return self.batch_size

    def step(self, k: int) -> None:
        members = self.rng.random((k, self.n)) < 0.5
        v = self.lookup(_masks_of(members))
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
    why it is offered.  ``counts`` = coalitions sampled (each feeds every player).
    """
    rng, seed_record = _rng_and_seed(seed)
    lookup = _Lookup(game)
    sampler = _BanzhafSampler(game, lookup, rng, batch_size=_check_positive_int("batch_size", batch_size))
    params = {"seed": seed_record, "batch_size": batch_size, "semivalue": "banzhaf"}
    return _drive(game, lookup, sampler, stop, name="banzhaf", params=params)


# --------------------------------------------------------------------------- entry point

Estimator = Callable[..., ValuationResult]

#: Every estimator by name; each takes ``(game, *, stop, seed, **params)``.
ESTIMATOR_KINDS: dict[str, ValueKind] = {
    "exact": ValueKind.SHAPLEY, "permutation": ValueKind.SHAPLEY, "truncated": ValueKind.SHAPLEY,
    "kernel": ValueKind.SHAPLEY, "banzhaf": ValueKind.BANZHAF, "loo": ValueKind.LOO,
}
"""The kind of values each estimator computes (a config check can refuse a payout before any work)."""

ESTIMATORS: dict[str, Estimator] = {
    "exact": exact,
    "permutation": permutation,
    "truncated": truncated,
    "kernel": kernel,
    "banzhaf": banzhaf,
    "loo": loo,
}


def estimate(game: Game, estimator: str = "auto", *, stop: StoppingRule | None = None, seed: Seed = 0,
             exact_max_players: int = EXACT_MAX_PLAYERS, **params: Any) -> ValuationResult:
    """Values of the players of ``game`` by the named estimator.

    Args:
        game: the game; all utilities are requested through ``game.utilities``.
        estimator: a key of :data:`ESTIMATORS`, or ``"auto"``: ``exact`` when
            ``game.n <= exact_max_players``, else ``permutation``.
        stop: stopping rule for sampling estimators (default
            :func:`common.valuation.stopping.default_stop`); ignored by ``exact`` and ``loo``.
        seed: int or ``numpy.random.Generator``; the same int gives the same result.
        exact_max_players: the largest ``n`` for which ``"auto"`` enumerates.
        **params: estimator-specific settings (see each function), recorded in
            ``result.params`` with the seed, evaluations, samples and the rule that fired.

    A game without players has nothing to value: every estimator returns an empty,
    converged result without touching the game.
    """
    name = estimator
    if name == "auto":
        name = "exact" if game.n <= exact_max_players else "permutation"
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose 'auto' or one of {sorted(ESTIMATORS)}")
    if stop is not None and not isinstance(stop, StoppingRule):
        raise TypeError(f"stop must be a StoppingRule, got {stop!r}")
    if game.n == 0:
        empty = np.zeros(0)
        return ValuationResult((), empty, empty, np.zeros(0, dtype=np.int64), name, CONVERGED,
                               {"seed": _rng_and_seed(seed)[1], "evaluations": 0, "samples": 0},
                               kind=ESTIMATOR_KINDS[name])
    result = ESTIMATORS[name](game, stop=stop, seed=seed, **params)
    if estimator == "auto":
        result = dataclasses.replace(result, params={**result.params, "auto": True})
    return result
