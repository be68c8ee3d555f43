"""Tests for common.valuation.stopping: the rules, their composition and the statuses they imply."""

from __future__ import annotations

import numpy as np
import pytest

from common.valuation.stopping import (
    BUDGET_EXHAUSTED,
    CONVERGED,
    STATUSES,
    AllOf,
    AnyOf,
    MaxEvaluations,
    MaxSamples,
    MaxSeconds,
    RankStableFor,
    StderrBelow,
    StopState,
    default_stop,
    status_of,
)


def state(*, values=(0.0, 0.0), stderr=(1.0, 1.0), evaluations: int = 0, samples: int = 100,
          elapsed: float = 0.0, iteration: int = 1) -> StopState:
    """A fake state: only what the rule under test looks at matters."""
    values = np.asarray(values, dtype=float)
    return StopState(values=values, stderr=np.asarray(stderr, dtype=float), counts=np.zeros(values.size, int),
                     evaluations=evaluations, samples=samples, elapsed=elapsed, iteration=iteration)


def test_max_evaluations() -> None:
    rule = MaxEvaluations(100)
    assert rule.check(state(evaluations=99)) == ()
    assert rule.check(state(evaluations=100)) == (rule,)
    assert rule(state(evaluations=150)) is True
    assert rule.samples_left(evaluations=40, samples=0, cost=20) == 3
    assert rule.samples_left(evaluations=120, samples=0, cost=20) == 0
    assert rule.kind == "budget"


def test_max_samples_and_max_seconds() -> None:
    assert MaxSamples(10).check(state(samples=9)) == ()
    assert MaxSamples(10)(state(samples=10))
    assert MaxSamples(10).samples_left(0, 4, 99) == 6
    assert not MaxSeconds(1.5)(state(elapsed=1.49))
    assert MaxSeconds(1.5)(state(elapsed=1.5))
    assert MaxSeconds(1.5).samples_left(0, 0, 1) is None  # time cannot be converted to samples


def test_stderr_below_needs_all_players_and_enough_samples() -> None:
    rule = StderrBelow(0.1, min_samples=30)
    assert rule(state(stderr=[0.05, 0.09]))
    assert not rule(state(stderr=[0.05, 0.1]))  # strict
    assert not rule(state(stderr=[0.0, 0.0], samples=29))  # too few samples to trust a 0
    assert not rule(state(stderr=[np.inf, 0.0]))  # undefined stderr never converges
    assert rule.kind == "convergence"
    assert rule.samples_left(0, 0, 1) is None


def test_rank_stable_for_counts_consecutive_checks() -> None:
    rule = RankStableFor(2)
    seq = [[1, 2, 3], [1, 2, 4], [1, 3, 2], [1, 4, 3], [0, 9, 5]]
    fired = [bool(rule.check(state(values=v, iteration=it))) for it, v in enumerate(seq, 1)]
    # ranks: (2,1,0) (2,1,0) (1,2,0) (1,2,0) (1,2,0) -> streaks 0 1 0 1 2
    assert fired == [False, False, False, False, True]
    # checking the same iteration again does not advance the streak
    assert rule.check(state(values=[0, 9, 5], iteration=5)) == (rule,)
    rule.reset()
    assert not rule(state(values=[0, 9, 5], iteration=1))


def test_rank_ties_are_broken_by_index() -> None:
    rule = RankStableFor(1)
    rule.check(state(values=[1.0, 1.0], iteration=1))
    assert rule.check(state(values=[1.0, 1.0], iteration=2)) == (rule,)


def test_or_reports_every_rule_that_fired() -> None:
    a, b, c = MaxEvaluations(10), StderrBelow(0.5, min_samples=2), MaxSeconds(5)
    rule = a | b | c
    assert isinstance(rule, AnyOf) and rule.rules == (a, b, c)  # flattened
    assert rule.check(state(evaluations=3, stderr=[1, 1])) == ()
    assert rule.check(state(evaluations=30, stderr=[1, 1])) == (a,)
    assert rule.check(state(evaluations=30, stderr=[0.1, 0.1], elapsed=9)) == (a, b, c)
    assert repr(rule) == "MaxEvaluations(10) | StderrBelow(0.5, min_samples=2) | MaxSeconds(5)"


def test_and_needs_every_rule() -> None:
    a, b = MaxSamples(50), StderrBelow(0.5, min_samples=2)
    rule = a & b
    assert isinstance(rule, AllOf)
    assert rule.check(state(samples=10, stderr=[0.1, 0.1])) == ()
    assert rule.check(state(samples=60, stderr=[0.9, 0.1])) == ()
    assert rule.check(state(samples=60, stderr=[0.1, 0.1])) == (a, b)


def test_nested_composition_and_repr() -> None:
    rule = (StderrBelow(0.1) & MaxSamples(100)) | MaxEvaluations(1000)
    assert repr(rule) == "(StderrBelow(0.1, min_samples=30) & MaxSamples(100)) | MaxEvaluations(1000)"
    assert rule.check(state(samples=200, stderr=[0.5, 0.5])) == ()
    fired = rule.check(state(samples=200, stderr=[0.01, 0.01], iteration=2))
    assert status_of(fired) == CONVERGED
    fired = rule.check(state(evaluations=1000, stderr=[0.5, 0.5], iteration=3))
    assert status_of(fired) == BUDGET_EXHAUSTED


def test_composites_check_every_part_without_short_circuit() -> None:
    """A stateful rule must see every batch even when an earlier part already decided."""
    rank = RankStableFor(2)
    rule = MaxEvaluations(0) | rank
    for it in (1, 2, 3):
        rule.check(state(values=[1, 2], iteration=it))
    assert rank.check(state(values=[1, 2], iteration=3)) == (rank,)
    rank2 = RankStableFor(2)
    rule2 = MaxSamples(1000) & rank2  # first part false: the second is still checked
    for it in (1, 2, 3):
        rule2.check(state(values=[1, 2], samples=1, iteration=it))
    assert rank2.check(state(values=[1, 2], iteration=3)) == (rank2,)


def test_reset_propagates_through_composites() -> None:
    rank = RankStableFor(1)
    rule = rank | MaxSeconds(100)
    rule.check(state(values=[1, 2], iteration=1))
    assert rule.check(state(values=[1, 2], iteration=2)) == (rank,)
    rule.reset()
    assert rule.check(state(values=[1, 2], iteration=1)) == ()


def test_samples_left_of_composites() -> None:
    ev, sm, conv = MaxEvaluations(100), MaxSamples(7), StderrBelow(0.1)
    assert (ev | sm).samples_left(evaluations=0, samples=0, cost=10) == 7
    assert (ev | conv).samples_left(evaluations=50, samples=0, cost=10) == 5
    assert (ev & sm).samples_left(evaluations=0, samples=0, cost=10) == 10
    assert (ev & conv).samples_left(evaluations=0, samples=0, cost=10) is None
    assert (conv | MaxSeconds(1)).samples_left(0, 0, 1) is None


def test_status_of() -> None:
    budget, conv = MaxEvaluations(1), StderrBelow(1.0)
    assert status_of((budget,)) == BUDGET_EXHAUSTED
    assert status_of((conv,)) == CONVERGED
    assert status_of((budget, conv)) == CONVERGED  # the criterion was met
    with pytest.raises(ValueError):
        status_of(())
    assert set(STATUSES) == {CONVERGED, BUDGET_EXHAUSTED}


def test_default_stop() -> None:
    rule = default_stop(8)
    assert repr(rule) == "MaxEvaluations(80000) | StderrBelow(0.001, min_samples=30)"
    assert status_of(rule.check(state(evaluations=80_000))) == BUDGET_EXHAUSTED


@pytest.mark.parametrize("make", [
    lambda: MaxEvaluations(-1), lambda: MaxEvaluations(1.5), lambda: MaxSamples(0),
    lambda: MaxSeconds(-1), lambda: StderrBelow(-0.1), lambda: StderrBelow(0.1, min_samples=1),
    lambda: RankStableFor(0), lambda: AnyOf(MaxSamples(1)), lambda: MaxSamples(1) | 3,
])
def test_invalid_rules_are_rejected(make) -> None:
    with pytest.raises((ValueError, TypeError)):
        make()
