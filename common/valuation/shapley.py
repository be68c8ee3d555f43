"""Shapley values of a game given as a table of coalition utilities (method.md §4).

``φ_i = Σ_{S⊆N∖{i}} |S|!(n−|S|−1)!/n! · [v(S∪{i}) − v(S)]``

The game is a vector ``utilities`` indexed by coalition bitmask (see
:mod:`common.valuation.bits`), which is exactly what the preference utility produces for
``all_masks(n)``.  Exact enumeration is the default wherever ``2**n`` utilities
are affordable; sampling estimators return the same :class:`ValuationResult`
so that reports and payouts need not care how the values were obtained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from common.valuation.bits import check_players, popcount

__all__ = ["EFFICIENT_KINDS", "ValuationResult", "ValueKind", "beta_size_weights", "estimate_exact", "exact_banzhaf",
           "exact_semivalue", "exact_shapley"]


class ValueKind(StrEnum):
    """What a result's values are. Only an efficient kind sums to ``v(N) − v(∅)``.

    A report labels each game's values with their kind, and a payout states which kind it
    pays from: Banzhaf and leave-one-out values are not Shapley values, and paying them out as
    if they were would misstate what each owner contributed.
    """

    SHAPLEY = "shapley"
    ASYMMETRIC = "asymmetric"
    BANZHAF = "banzhaf"
    BETA = "beta"
    LOO = "loo"

    @property
    def label(self) -> str:
        """The kind's name in prose (reports, payout descriptions): ``Shapley``, ``leave-one-out``."""
        return {"shapley": "Shapley", "asymmetric": "asymmetric Shapley", "banzhaf": "Banzhaf",
                "beta": "Beta Shapley", "loo": "leave-one-out"}[self.value]


EFFICIENT_KINDS: frozenset[ValueKind] = frozenset({ValueKind.SHAPLEY, ValueKind.ASYMMETRIC})
"""Kinds whose values sum to ``v(N) − v(∅)`` (efficiency), so their shares split the gain."""


@dataclass(frozen=True, eq=False)
class ValuationResult:
    """Values of the players of one game, with their uncertainty.

    Modelled on pyDVL's ``ValuationResult``: ``stderr`` and ``counts`` travel
    with the values so that an exact result and a Monte Carlo estimate are
    reported the same way, and a reader can tell a converged value from a
    noisy one.

    Attributes:
        players: player (owner) names, in the order of ``values``.
        values: value of each player, of kind ``kind``.
        stderr: standard error of each value (0 when exact).
        counts: number of utility evaluations that fed each value.
        estimator: name of the method, e.g. ``"exact"``.
        status: ``"converged"`` when the estimator met its stopping criterion
            (always, for exact enumeration), ``"budget_exhausted"`` when a budget
            (evaluations, samples, seconds) ended the run first; see
            :mod:`common.valuation.stopping`.
        params: estimator settings, recorded for reproducibility.
        trace: for sampling estimators, snapshots ``{"evaluations", "values", "stderr"}`` of
            the running estimate (at most :data:`TRACE_MAX_POINTS`, thinned evenly), so a
            reader can see whether the values had settled; empty for exact methods.
        kind: what the values are (:class:`ValueKind`); Shapley unless the estimator computes
            another semivalue.

    Arrays are copied and made read-only so the frozen result cannot be
    changed behind a report's back.  Equality is identity (``eq=False``)
    because elementwise array comparison has no single truth value.
    """

    players: tuple[str, ...]
    values: np.ndarray
    stderr: np.ndarray
    counts: np.ndarray
    estimator: str
    status: str
    params: dict[str, Any] = field(default_factory=dict)
    trace: tuple[dict[str, Any], ...] = ()
    kind: ValueKind = ValueKind.SHAPLEY

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ValueKind(self.kind))
        players = tuple(str(p) for p in self.players)
        if len(set(players)) != len(players):
            raise ValueError(f"player names must be unique, got {players}")
        k = len(players)
        arrays = {}
        for name, dtype in (("values", np.float64), ("stderr", np.float64), ("counts", np.int64)):
            arr = np.array(getattr(self, name), dtype=dtype, copy=True)
            if arr.shape != (k,):
                raise ValueError(f"{name} must have shape ({k},) (one per player), got {arr.shape}")
            arr.setflags(write=False)
            arrays[name] = arr
        object.__setattr__(self, "players", players)
        for name, arr in arrays.items():
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "params", dict(self.params))

    def as_dict(self) -> dict[str, dict[str, float | int]]:
        """Plain-Python view ``{player: {"value", "stderr", "count"}}`` for JSON reports (the kind
        is stated once, beside it)."""
        return {
            p: {"value": float(v), "stderr": float(s), "count": int(c)}
            for p, v, s, c in zip(self.players, self.values, self.stderr, self.counts)
        }


def exact_shapley(utilities: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley values from the full utility table ``utilities[mask] = v(S)``: the
    semivalue whose coalition sizes are equally likely (:func:`exact_semivalue`)."""
    n = check_players(n)
    return exact_semivalue(utilities, n, np.full(n, 1.0 / max(n, 1)))


def exact_banzhaf(utilities: np.ndarray, n: int) -> np.ndarray:
    """Exact Banzhaf values ``β_i = 2^{1−n} Σ_{S∌i} [v(S∪{i}) − v(S)]``: the semivalue that
    weighs every coalition equally, so its sizes are binomial."""
    n = check_players(n)
    return exact_semivalue(utilities, n, np.array([math.comb(n - 1, s) for s in range(n)]) / 2.0 ** max(n - 1, 0))


def beta_size_weights(n: int, alpha: float, beta: float) -> np.ndarray:
    """Beta Shapley's distribution of the size ``|S|`` of the coalition a player joins.

    Kwon & Zou (2022): ``P(|S| = s) = C(n−1, s) · B(s + β, n − 1 − s + α) / B(α, β)``, the
    beta-binomial law on ``0 … n−1``. ``α = β = 1`` is uniform (Shapley); ``α > β`` favours
    small coalitions, where one owner's data changes most (their recommended Beta(16, 1)),
    and so dampens the noise of marginal contributions to large, saturated coalitions.
    Computed in log space: the Beta functions overflow long before the weights do.
    """
    n = check_players(n)
    if not (alpha > 0 and beta > 0 and math.isfinite(alpha) and math.isfinite(beta)):
        raise ValueError(f"Beta Shapley needs alpha > 0 and beta > 0, got ({alpha}, {beta})")

    def log_beta(a: float, b: float) -> float:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    logs = [math.log(math.comb(n - 1, s)) + log_beta(s + beta, n - 1 - s + alpha) - log_beta(alpha, beta)
            for s in range(n)]
    q = np.exp(np.array(logs, dtype=np.float64))
    return q / q.sum() if n else q


def exact_semivalue(utilities: np.ndarray, n: int, size_weights: np.ndarray) -> np.ndarray:
    """Exact values of the semivalue whose joined-coalition size has law ``size_weights``.

    ``φ_i = Σ_{S∌i} q(|S|)/C(n−1, |S|) · [v(S∪{i}) − v(S)]`` with ``q`` summing to 1 over
    sizes ``0 … n−1``: Shapley (``q = 1/n``), Banzhaf, Beta Shapley are all this one sum.
    For each player the table is viewed as shape ``(2**(n−i−1), 2, 2**i)``: ``[:, 0, :]``
    runs over the coalitions without ``i`` and ``[:, 1, :]`` over the same with ``i`` added,
    so the sum is one vectorised expression, ``O(n·2**n)`` in all. The weight is computed as
    ``q(s) / C(n−1, s)``, which stays accurate for every ``n`` (factorials overflow first).
    """
    n = check_players(n)
    v = np.asarray(utilities, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] != 1 << n:
        raise ValueError(
            f"utilities must have one entry per coalition, length 2**{n} = {1 << n}, got shape {v.shape}"
        )
    if not np.all(np.isfinite(v)):
        raise ValueError("utilities contain nan or inf")
    q = np.asarray(size_weights, dtype=np.float64)
    if q.shape != (n,):
        raise ValueError(f"size_weights must have one entry per size 0..{n - 1}, got shape {q.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    weight_by_size = q / np.array([math.comb(n - 1, k) for k in range(n)], dtype=np.float64)
    # The grand coalition (size n) never appears on the "without i" side, so its
    # out-of-range size is clipped only to keep the lookup in bounds.
    weights = weight_by_size[np.minimum(popcount(np.arange(1 << n, dtype=np.int64)), n - 1)]
    phi = np.empty(n, dtype=np.float64)
    for i in range(n):
        shape = (1 << (n - i - 1), 2, 1 << i)
        table = v.reshape(shape)
        w_without_i = weights.reshape(shape)[:, 0, :]
        phi[i] = np.sum(w_without_i * (table[:, 1, :] - table[:, 0, :]))
    return phi


def estimate_exact(players: Sequence[str], utilities: np.ndarray) -> ValuationResult:
    """Exact Shapley values packaged as a :class:`ValuationResult`.

    Every value uses all ``2**n`` utilities, hence ``counts = 2**n`` and
    ``stderr = 0``; the status is ``"converged"`` by definition.
    """
    players = tuple(players)
    n = len(players)
    values = exact_shapley(utilities, n)
    return ValuationResult(
        players=players,
        values=values,
        stderr=np.zeros(n),
        counts=np.full(n, 1 << n, dtype=np.int64),
        estimator="exact",
        status="converged",
        params={"n_players": n, "n_coalitions": 1 << n},
    )
