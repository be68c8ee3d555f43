"""When a sampling estimator stops: composable stopping rules (method.md §4).

A Monte Carlo estimator draws samples in batches; after every batch it builds a
:class:`StopState` and asks its rule whether to stop.  Rules combine with ``|``
(stop as soon as *any* part says so) and ``&`` (stop only when *all* parts say so), e.g.::

    MaxEvaluations(50_000) | StderrBelow(1e-3)          # the default, with 10_000·n
    (StderrBelow(1e-3) & MaxSamples(200)) | MaxSeconds(600)

Rules are of two kinds, and the kind decides the status of the result:

* **convergence** rules (:class:`StderrBelow`, :class:`RankStableFor`) say the
  estimate is good enough → status ``"converged"``;
* **budget** rules (:class:`MaxEvaluations`, :class:`MaxSamples`,
  :class:`MaxSeconds`) say we cannot afford more → status ``"budget_exhausted"``.

:meth:`StoppingRule.check` returns the *leaf* rules that decided the stop (empty:
go on), so the estimator can report which one fired and derive the status with
:func:`status_of`; when a convergence and a budget rule fire on the same check,
the estimate did meet its criterion, so ``"converged"`` wins.

Budget rules also tell the estimator how many more samples fit
(:meth:`StoppingRule.samples_left`), so a large batch does not overshoot
``MaxEvaluations`` by a whole batch; at least one sample is always drawn per batch.

A rule with no budget part (say ``StderrBelow(0.0)`` alone) may never fire: combine
convergence rules with a budget with ``|``.  Rules may hold state across checks
(:class:`RankStableFor`); the estimators work on a deep copy, so one rule object can
be passed to many runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

import numpy as np

__all__ = [
    "CONVERGED",
    "BUDGET_EXHAUSTED",
    "STATUSES",
    "StopState",
    "StoppingRule",
    "AnyOf",
    "AllOf",
    "MaxEvaluations",
    "MaxSamples",
    "MaxSeconds",
    "StderrBelow",
    "RankStableFor",
    "ValuationStatus",
    "default_stop",
    "status_of",
]

class ValuationStatus(StrEnum):
    """How an estimator run ended (pyDVL's status habit); written into reports as its string."""

    #: A convergence criterion was met (or the method is exact / deterministic).
    CONVERGED = "converged"
    #: A budget rule (evaluations, samples, seconds) stopped the run before convergence.
    BUDGET_EXHAUSTED = "budget_exhausted"


CONVERGED = ValuationStatus.CONVERGED
BUDGET_EXHAUSTED = ValuationStatus.BUDGET_EXHAUSTED
#: Every status an estimator in :mod:`common.valuation.estimators` can report.
STATUSES: tuple[ValuationStatus, ...] = tuple(ValuationStatus)

#: Kinds of leaf rules; they map one-to-one onto :data:`STATUSES`.
CONVERGENCE = "convergence"
BUDGET = "budget"


@dataclass(frozen=True)
class StopState:
    """What a rule may look at after a batch.

    Attributes:
        values: current estimate, one per player.
        stderr: its standard error (``inf`` while it is not yet defined).
        counts: utility evaluations that fed each value so far.
        evaluations: distinct coalitions the estimator run has requested so far (a repeat
            within the run is free; what the game had memoised from earlier runs still
            counts, so the figure does not depend on history).
        samples: independent samples drawn so far (what a stderr is based on: an
            antithetic pair of permutations, a coalition pair, one coalition, ...).
        elapsed: seconds since the estimator started.
        iteration: number of batches done (1 after the first batch).
    """

    values: np.ndarray
    stderr: np.ndarray
    counts: np.ndarray
    evaluations: int
    samples: int
    elapsed: float
    iteration: int


class StoppingRule:
    """Base of every rule: ``check`` the state, combine with ``|`` and ``&``."""

    #: ``"convergence"`` or ``"budget"`` for leaf rules; ``None`` for combinations.
    kind: ClassVar[str | None] = None

    def check(self, state: StopState) -> tuple[StoppingRule, ...]:
        """The leaf rules that decide to stop now; empty to keep sampling.

        Called exactly once per batch; stateful rules rely on that.
        """
        raise NotImplementedError

    def __call__(self, state: StopState) -> bool:
        """Whether to stop (a convenience over :meth:`check`)."""
        return bool(self.check(state))

    def samples_left(self, evaluations: int, samples: int, cost: int) -> int | None:
        """How many more samples, each requesting at most ``cost`` utilities, fit the budget.

        ``None`` means this rule sets no such limit.  Estimators size their next batch
        with it so that a budget is overshot by less than one sample, not one batch.
        """
        return None

    def max_evaluations(self) -> int | None:
        """The most evaluations a run under this rule can use; ``None`` when unbounded.

        Estimators plan with it: a budget that buys all ``2ⁿ`` coalitions is spent on exact
        enumeration, and stratified estimators enumerate the coalition sizes it can afford.
        """
        return None

    def max_seconds(self) -> float | None:
        """The longest a run under this rule can last; ``None`` when it sets no time limit.

        A time limit means the caller cannot afford every evaluation the budget allows, so
        estimators do not trade it for an up-front enumeration of all ``2ⁿ`` coalitions.
        """
        return None

    def reset(self) -> None:
        """Forget any state from earlier checks (a no-op for stateless rules)."""

    def __or__(self, other: StoppingRule) -> StoppingRule:
        return AnyOf(self, other)

    def __and__(self, other: StoppingRule) -> StoppingRule:
        return AllOf(self, other)


class _Combination(StoppingRule):
    """Shared plumbing of ``|`` and ``&``: flattening, reset and repr."""

    symbol: ClassVar[str] = ""

    def __init__(self, *rules: StoppingRule) -> None:
        if len(rules) < 2:
            raise ValueError("a combination needs at least two rules")
        flat: list[StoppingRule] = []
        for rule in rules:
            if not isinstance(rule, StoppingRule):
                raise TypeError(f"not a stopping rule: {rule!r}")
            # (a | b) | c is a | b | c: flattening keeps reprs and "which fired" readable.
            flat.extend(rule.rules if type(rule) is type(self) else (rule,))
        self.rules: tuple[StoppingRule, ...] = tuple(flat)

    def _checks(self, state: StopState) -> list[tuple[StoppingRule, ...]]:
        # Every part is checked, with no short-circuit, so that stateful parts such as
        # RankStableFor see every batch.
        return [rule.check(state) for rule in self.rules]

    def reset(self) -> None:
        for rule in self.rules:
            rule.reset()

    def __repr__(self) -> str:
        return f" {self.symbol} ".join(
            f"({r!r})" if isinstance(r, _Combination) else repr(r) for r in self.rules
        )


class AnyOf(_Combination):
    """Stop when any part says stop (``a | b``)."""

    symbol = "|"

    def check(self, state: StopState) -> tuple[StoppingRule, ...]:
        return tuple(leaf for fired in self._checks(state) for leaf in fired)

    def samples_left(self, evaluations: int, samples: int, cost: int) -> int | None:
        # Any part can end the run, so the tightest budget binds.
        limits = [r.samples_left(evaluations, samples, cost) for r in self.rules]
        known = [x for x in limits if x is not None]
        return min(known) if known else None

    def max_evaluations(self) -> int | None:
        known = [x for x in (r.max_evaluations() for r in self.rules) if x is not None]
        return min(known) if known else None

    def max_seconds(self) -> float | None:
        known = [x for x in (r.max_seconds() for r in self.rules) if x is not None]
        return min(known) if known else None


class AllOf(_Combination):
    """Stop only when every part says stop (``a & b``), e.g. a minimum budget."""

    symbol = "&"

    def check(self, state: StopState) -> tuple[StoppingRule, ...]:
        checks = self._checks(state)
        if all(checks):
            return tuple(leaf for fired in checks for leaf in fired)
        return ()

    def samples_left(self, evaluations: int, samples: int, cost: int) -> int | None:
        # Sampling goes on until the last part agrees, so a part without a limit
        # (a convergence rule) lifts every limit.
        limits = [r.samples_left(evaluations, samples, cost) for r in self.rules]
        if any(x is None for x in limits):
            return None
        return max(limits)  # type: ignore[type-var]

    def max_evaluations(self) -> int | None:
        limits = [r.max_evaluations() for r in self.rules]
        return None if any(x is None for x in limits) else max(limits)  # type: ignore[type-var]

    def max_seconds(self) -> float | None:
        limits = [r.max_seconds() for r in self.rules]
        return None if any(x is None for x in limits) else max(limits)  # type: ignore[type-var]


class MaxEvaluations(StoppingRule):
    """Budget: stop once ``n`` distinct coalitions have been requested.

    A coalition requested twice in one run counts once (the game's memo makes the repeat
    free), but one the game had memoised from an *earlier* run counts: the budget is a
    property of the estimator run and therefore reproducible, whereas how many utilities
    the game really had to compute depends on its history (see ``Game.computed``).
    """

    kind = BUDGET

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"MaxEvaluations needs a non-negative int, got {n!r}")
        self.n = int(n)

    def check(self, state: StopState) -> tuple[StoppingRule, ...]:
        return (self,) if state.evaluations >= self.n else ()

    def samples_left(self, evaluations: int, samples: int, cost: int) -> int | None:
        return max(0, (self.n - evaluations) // max(1, cost))

    def max_evaluations(self) -> int | None:
        return self.n

    def __repr__(self) -> str:
        return f"MaxEvaluations({self.n})"


class MaxSamples(StoppingRule):
    """Budget: stop once ``n`` independent samples have been drawn.

    Useful to compare estimators at equal sampling effort (e.g. the same number of
    permutations for permutation and truncated Monte Carlo).
    """

    kind = BUDGET

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"MaxSamples needs a positive int, got {n!r}")
        self.n = int(n)

    def check(self, state: StopState) -> tuple[StoppingRule, ...]:
        return (self,) if state.samples >= self.n else ()

    def samples_left(self, evaluations: int, samples: int, cost: int) -> int | None:
        return max(0, self.n - samples)

    def __repr__(self) -> str:
        return f"MaxSamples({self.n})"


class MaxSeconds(StoppingRule):
    """Budget: stop once ``seconds`` of wall time have passed (checked after each batch)."""

    kind = BUDGET

    def __init__(self, seconds: float) -> None:
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds >= 0:
            raise ValueError(f"MaxSeconds needs a non-negative number, got {seconds!r}")
        self.seconds = float(seconds)

    def check(self, state: StopState) -> tuple[StoppingRule, ...]:
        return (self,) if state.elapsed >= self.seconds else ()

    def max_seconds(self) -> float | None:
        return self.seconds

    def __repr__(self) -> str:
        return f"MaxSeconds({self.seconds:g})"


class StderrBelow(StoppingRule):
    """Convergence: every player's standard error is below ``threshold``.

    ``min_samples`` guards against the small-sample trap: with a handful of samples the
    sample variance is itself so noisy (or, for a few identical samples, exactly 0) that
    a small stderr would be luck rather than convergence.
    """

    kind = CONVERGENCE

    def __init__(self, threshold: float, *, min_samples: int = 30) -> None:
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not threshold >= 0:
            raise ValueError(f"StderrBelow needs a non-negative threshold, got {threshold!r}")
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 2:
            raise ValueError(f"min_samples must be an int >= 2, got {min_samples!r}")
        self.threshold = float(threshold)
        self.min_samples = min_samples

    def check(self, state: StopState) -> tuple[StoppingRule, ...]:
        if state.samples < self.min_samples:
            return ()
        stderr = np.asarray(state.stderr, dtype=np.float64)
        return (self,) if bool(np.all(stderr < self.threshold)) else ()

    def __repr__(self) -> str:
        return f"StderrBelow({self.threshold:g}, min_samples={self.min_samples})"


class RankStableFor(StoppingRule):
    """Convergence: the ranking of players has not changed for ``k`` consecutive checks.

    For payouts and reports the *order* of owners often matters more than the last digit
    of their values; this stops as soon as further samples stop reordering them.  Ties
    are broken by player index so that equal values give one well-defined ranking.
    """

    kind = CONVERGENCE

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"RankStableFor needs an int k >= 1, got {k!r}")
        self.k = k
        self.reset()

    def reset(self) -> None:
        self._ranking: tuple[int, ...] | None = None
        self._streak = 0
        self._last_iteration: int | None = None
        self._last_answer: tuple[StoppingRule, ...] = ()

    def check(self, state: StopState) -> tuple[StoppingRule, ...]:
        if state.iteration == self._last_iteration:  # idempotent within one batch
            return self._last_answer
        ranking = tuple(np.argsort(-np.asarray(state.values, dtype=np.float64), kind="stable").tolist())
        self._streak = self._streak + 1 if ranking == self._ranking else 0
        self._ranking = ranking
        self._last_iteration = state.iteration
        self._last_answer = (self,) if self._streak >= self.k else ()
        return self._last_answer

    def __repr__(self) -> str:
        return f"RankStableFor({self.k})"


def default_stop(n_players: int) -> StoppingRule:
    """The rule used when none is given: ``MaxEvaluations(10_000·n) | StderrBelow(1e-3)``.

    A permutation costs ``n + 1`` evaluations, so ``10_000·n`` buys roughly 10⁴ permutations
    whatever ``n`` is (stderrs of about 1 % of the spread of marginal contributions), at a
    cost linear in ``n``.  ``1e-3`` is absolute, chosen for the utility scales FairPool uses
    (accuracy in [0, 1], mean log-sigmoid of order 1): it ends early on easy games (e.g.
    nearly additive ones) and rarely before the budget otherwise.
    """
    return MaxEvaluations(10_000 * max(1, int(n_players))) | StderrBelow(1e-3)


def status_of(fired: tuple[StoppingRule, ...]) -> ValuationStatus:
    """Result status from the leaf rules that fired (see the module docstring)."""
    if not fired:
        raise ValueError("no rule fired; the run has not stopped")
    return CONVERGED if any(rule.kind == CONVERGENCE for rule in fired) else BUDGET_EXHAUSTED
