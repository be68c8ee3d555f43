"""What every sampling estimator shares: budget accounting, running moments and the driver loop.

The estimators (:mod:`common.valuation.estimators`) differ in *which* coalitions they ask for
and how they turn utilities into values; everything else lives here, once:

* :class:`Lookup` — ``game.utilities`` that counts the **distinct** coalitions a run requested.
  A coalition asked for twice in one run (∅ and N by every permutation, a look-ahead prefix,
  a repeated draw) is paid for once: the game's memo made the repeat free, so charging it
  again would spend budget on nothing.  Memo hits from *earlier* runs still count, so a
  budget means the same thing whatever was memoised before (reproducible).
* :class:`Moments` — exact, batch-order-independent running means and variances.
* :func:`pooled_variance` — a per-cell variance that is never 0 merely because a cell saw
  too few (or only identical) samples: the spread of the whole family enters as one
  pseudo-sample, so an estimate that has not been observed varying is not reported exact.
* :func:`jump_variance` — a floor for marginals that are mostly 0 with rare jumps (a player
  pivotal in few permutations), from Laplace's rate of the jumps.
* :func:`drive` — draw a batch, update the estimate, ask the stopping rule, repeat.
* :func:`enumerated` — exact values when the budget already buys all ``2ⁿ`` coalitions.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from common.valuation.game import Game
from common.valuation.shapley import ValuationResult, ValueKind, estimate_exact
from common.valuation.stopping import CONVERGED, StoppingRule, StopState, default_stop, status_of

__all__ = ["Lookup", "Moments", "Sampler", "Seed", "TRACE_MAX_POINTS", "check_positive_int", "deterministic",
           "drive", "enumerated", "fresh_rule", "growing_batch", "full_mask", "jump_variance", "masks_of",
           "pooled_variance", "rng_and_seed", "thin_trace"]

Seed = int | np.random.Generator

DENSE_MAX_PLAYERS = 22
"""Up to this many players the distinct-request bookkeeping is a bitmap (4 MiB at 22)."""

TRACE_MAX_POINTS = 200
"""Snapshots kept of a sampling run (a long run has thousands of iterations)."""


class Lookup:
    """``game.utilities`` for one estimator run, counting the distinct coalitions requested."""

    def __init__(self, game: Game) -> None:
        self.game = game
        self.evaluations = 0
        """Distinct coalitions this run has requested so far (its budget use)."""
        self._dense = np.zeros(1 << game.n, dtype=bool) if game.n <= DENSE_MAX_PLAYERS else None
        self._sparse: set[int] = set()

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, dtype=np.int64)
        flat = masks.ravel()
        if self._dense is not None:
            fresh = np.unique(flat[~self._dense[flat]])
            self._dense[fresh] = True
            self.evaluations += int(fresh.size)
        else:
            before = len(self._sparse)
            self._sparse.update(flat.tolist())
            self.evaluations += len(self._sparse) - before
        return self.game.utilities(flat).reshape(masks.shape)

    @property
    def complete(self) -> bool:
        """Whether every one of the ``2ⁿ`` coalitions has been requested (exact values are free)."""
        return self._dense is not None and self.evaluations == self._dense.size

    def seen(self, masks: np.ndarray) -> np.ndarray:
        """Whether each mask was already requested in this run (requesting it again is free)."""
        masks = np.asarray(masks, dtype=np.int64)
        if self._dense is not None:
            return self._dense[masks]
        return np.fromiter((m in self._sparse for m in masks.ravel().tolist()), dtype=bool,
                           count=masks.size).reshape(masks.shape)


def masks_of(members: np.ndarray) -> np.ndarray:
    """Coalition masks of the rows of a boolean membership matrix."""
    n = members.shape[1]
    return members.astype(np.int64) @ (np.int64(1) << np.arange(n, dtype=np.int64))


def full_mask(n: int) -> int:
    """The grand coalition's mask."""
    return (1 << n) - 1


def rng_and_seed(seed: Seed) -> tuple[np.random.Generator, Any]:
    """The generator to draw from and a JSON-friendly record of the seed."""
    if isinstance(seed, np.random.Generator):
        return seed, repr(seed)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed)), int(seed)


def check_positive_int(name: str, value: int) -> int:
    """``value`` as an int if it is a positive integer, else a ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class Moments:
    """Per-cell running count, mean and sum of squared deviations (Chan et al.).

    Batches are merged exactly, so the mean and variance do not depend on how the samples
    were split into batches, and the update is stable where naive ``Σx²`` would cancel.
    ``where`` selects which entries of a batch belong to each cell (a stratum, a player's
    "with i" group).  Cells are the trailing axes of ``shape``.
    """

    def __init__(self, shape: int | tuple[int, ...]) -> None:
        self.count = np.zeros(shape, dtype=np.int64)
        self.mean = np.zeros(shape)
        self.m2 = np.zeros(shape)

    def add(self, x: np.ndarray, where: np.ndarray | None = None, *, at: Any = ...) -> None:
        """Merge a batch: ``x`` has one leading sample axis before the cells it updates.

        ``at`` indexes the cells the batch belongs to (default: all), e.g. one size's row.
        """
        x = np.asarray(x, dtype=np.float64)
        w = np.ones(x.shape, dtype=bool) if where is None else np.broadcast_to(where, x.shape)
        nb = w.sum(axis=0)
        mean_b = np.where(w, x, 0.0).sum(axis=0) / np.maximum(nb, 1)
        m2_b = np.where(w, (x - mean_b) ** 2, 0.0).sum(axis=0)
        count, mean = self.count[at], self.mean[at]
        total = count + nb
        safe = np.maximum(total, 1)
        delta = mean_b - mean
        self.mean[at] = mean + delta * nb / safe
        self.m2[at] = self.m2[at] + m2_b + delta**2 * count * nb / safe
        self.count[at] = total

    def variance(self) -> np.ndarray:
        """Sample variance (ddof 1); ``inf`` where fewer than two samples make it undefined."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.count >= 2, self.m2 / np.maximum(self.count - 1, 1), np.inf)

    def stderr(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(self.variance() / np.maximum(self.count, 1))


def pooled_variance(m2: np.ndarray, count: np.ndarray, prior: np.ndarray | float,
                    weight: float = 1.0) -> np.ndarray:
    """Per-cell variance with the family's spread ``prior`` counted as ``weight`` extra samples.

    ``(m2 + weight·prior) / (count − 1 + weight)``: with many samples this is the usual ddof-1
    variance; with one sample, or ``count`` identical ones, it is a share of ``prior``
    instead of undefined or 0.  That is what keeps a player never seen pivotal from being
    reported with stderr 0 while its estimate is really uncertain.
    """
    count = np.asarray(count)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count >= 1, (m2 + weight * prior) / np.maximum(count - 1 + weight, 1e-300), np.inf)


def jump_variance(count: np.ndarray, nonzero: np.ndarray, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """A floor for the per-sample variance of marginals that are 0 except for rare jumps.

    Why: in a majority game a player is pivotal in a few permutations out of many; seen
    pivotal ``k = 0`` or ``1`` times in ``c``, its sample variance is 0 or about ``J²/c`` while
    its real rate may be several times that, so ``±2·stderr`` misses the truth far more often
    than 5%.  The floor treats "the marginal is not 0" as a Bernoulli event with Laplace's
    rate ``p̃ = (k + 1)/(c + 2)`` (one success and one failure added: Agresti–Coull's two
    each over-covered majority games in the estimator benchmark), and a jump's moments as
    those seen — the cell's own where it jumped at least twice, the pool
    of every cell's jumps otherwise: ``p̃·E[J²] − p̃²·E[J]²`` (``E[J] = 0`` for the pool, so
    signs cannot cancel it away).  Where marginals are rarely 0 the floor is about the
    sample variance plus ``E[J]²/(c + 2)``: it matters only where jumps are rare.

    ``count``, ``nonzero``, ``total`` and ``squares`` are per cell: samples, samples ≠ 0, and
    the sum and the sum of squares of the samples.
    """
    count, nonzero = np.asarray(count, dtype=np.float64), np.asarray(nonzero, dtype=np.float64)
    rate = (nonzero + 1) / (count + 2)
    pooled_square = float(squares.sum() / nonzero.sum()) if nonzero.sum() else 0.0
    own = nonzero >= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        square = np.where(own, squares / np.maximum(nonzero, 1), pooled_square)
        mean = np.where(own, total / np.maximum(nonzero, 1), 0.0)
    return np.maximum(rate * square - rate**2 * mean**2, 0.0)


class Sampler(Protocol):
    """What :func:`drive` needs from a sampling estimator."""

    cost: int
    """Upper bound on the new coalitions one sample requests (to size batches to a budget)."""
    samples: int
    """Independent samples drawn so far."""
    @property
    def exhausted(self) -> bool:
        """Whether every coalition the estimator could use has been evaluated (the result is exact)."""

    def batch(self) -> int:
        """Preferred number of samples in the next batch."""

    def step(self, k: int) -> None:
        """Draw ``k`` samples and evaluate their coalitions."""

    def estimate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Current ``(values, stderr, counts)``."""


def growing_batch(batch_size: int, samples: int, border: int) -> int:
    """Next batch of a sampler whose every check (an estimate) has a fixed cost of O(n²) or more.

    Batches grow with the sample count (geometrically: a run makes O(log samples) checks),
    and the first one takes the whole ``border`` (the coalitions enumerated first) if any.
    """
    return max(batch_size, samples // 2, border if samples == 0 else 0)


@runtime_checkable
class Finishing(Protocol):
    """A sampler with a better final estimate than its per-batch one (see :func:`drive`)."""

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Final ``values, stderr, counts`` and what to add to ``params``."""
        ...


def fresh_rule(stop: StoppingRule | None, n: int) -> StoppingRule:
    """A reset deep copy of ``stop`` (or the default), so no state leaks between runs."""
    rule = copy.deepcopy(stop if stop is not None else default_stop(n))
    rule.reset()
    return rule


def drive(game: Game, lookup: Lookup, sampler: Sampler, rule: StoppingRule, *,
          name: str, params: dict[str, Any], kind: ValueKind,
          from_table: Callable[[np.ndarray, int], np.ndarray] | None = None) -> ValuationResult:
    """Run ``sampler`` batch by batch until ``rule`` fires (or nothing is left to draw).

    Each batch is capped by the rule's :meth:`~StoppingRule.samples_left` (but is at least
    one sample, so every check sees progress).  A sampler that has evaluated every coalition
    it can use is exact: the run ends there, converged, whatever budget is left.  So is a
    run that has requested all ``2ⁿ`` coalitions: ``from_table`` (the exact values from the
    full utility table) then replaces the estimate, at no further cost.
    """
    start = time.perf_counter()
    iteration = 0
    snapshots: list[dict[str, Any]] = []
    fired: tuple[StoppingRule, ...] = ()
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
        complete = from_table is not None and lookup.complete
        if fired or sampler.exhausted or complete:
            break
    exhausted = sampler.exhausted or complete
    extra: dict[str, Any] = {}
    if complete and not sampler.exhausted and from_table is not None:
        values = from_table(lookup(np.arange(1 << game.n, dtype=np.int64)), game.n)
        stderr = np.zeros(game.n)
        counts = np.full(game.n, 1 << game.n, dtype=np.int64)
    elif isinstance(sampler, Finishing):  # a final estimate too dear to make after every batch
        values, stderr, counts, extra = sampler.finish()
        snapshots[-1] = _snapshot(game.players, lookup.evaluations, values, stderr)
    status = status_of(fired) if fired and not exhausted else CONVERGED
    record = {**params, "evaluations": lookup.evaluations, "samples": sampler.samples,
              "iterations": iteration, "stop": repr(rule), "stopped_by": [repr(r) for r in fired],
              **({"exhausted": True} if exhausted else {}), **extra}
    return ValuationResult(game.players, values, stderr, counts, name, status, record,
                           trace=thin_trace(snapshots), kind=kind)


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


def deterministic(game: Game, lookup: Lookup, values: np.ndarray, counts: np.ndarray, *,
                  name: str, params: dict[str, Any], kind: ValueKind) -> ValuationResult:
    """Result of a method that computes its values outright (no sampling, stderr 0)."""
    record = {**params, "evaluations": lookup.evaluations, "samples": 0, "iterations": 1,
              "stop": None, "stopped_by": []}
    return ValuationResult(game.players, values, np.zeros(game.n), counts, name, CONVERGED, record, kind=kind)


def enumerated(game: Game, *, name: str, params: dict[str, Any],
               from_table: Callable[[np.ndarray, int], np.ndarray] | None = None,
               kind: ValueKind = ValueKind.SHAPLEY) -> ValuationResult:
    """Exact values under a sampling estimator's name, for a budget that buys ``2ⁿ``: Shapley's,
    or ``from_table(table, n)``'s (of ``kind``).

    Sampling all ``2ⁿ`` coalitions one batch at a time would cost as many evaluations and
    still leave sampling error; enumerating them is exact.  ``params["enumerated"]`` says so.
    """
    lookup = Lookup(game)
    table = lookup(np.arange(1 << game.n, dtype=np.int64))
    if from_table is None:
        base = estimate_exact(game.players, table)
        values, counts = base.values, base.counts
    else:
        values, counts = from_table(table, game.n), np.full(game.n, 1 << game.n, dtype=np.int64)
    return deterministic(game, lookup, values, counts, name=name, params={**params, "enumerated": True}, kind=kind)
