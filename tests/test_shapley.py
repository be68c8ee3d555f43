"""Tests for common.valuation.shapley: exact Shapley values and ValuationResult."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.valuation.shapley import ValuationResult, estimate_exact, exact_shapley
from common.valuation.utility import all_masks, coalition_utilities


def naive_shapley(v: np.ndarray, n: int) -> np.ndarray:
    """Average marginal contribution over all n! orderings (independent definition)."""
    phi = np.zeros(n)
    perms = list(itertools.permutations(range(n)))
    for order in perms:
        mask = 0
        for i in order:
            phi[i] += v[mask | (1 << i)] - v[mask]
            mask |= 1 << i
    return phi / len(perms)


#: (n, utilities) for random games with 1..7 players.
games = st.integers(1, 7).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(
            st.floats(-100, 100, allow_nan=False, allow_infinity=False),
            min_size=1 << n,
            max_size=1 << n,
        ).map(np.array),
    )
)


@settings(max_examples=60, deadline=None)
@given(game=games)
def test_efficiency(game) -> None:
    n, v = game
    phi = exact_shapley(v, n)
    assert phi.sum() == pytest.approx(v[-1] - v[0], abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(game=games, data=st.data())
def test_null_player_gets_zero(game, data) -> None:
    n, v = game
    i = data.draw(st.integers(0, n - 1))
    bit = 1 << i
    v = v.copy()
    for mask in range(1 << n):
        if mask & bit:
            v[mask] = v[mask ^ bit]  # adding i never changes the value
    assert exact_shapley(v, n)[i] == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(game=games.filter(lambda g: g[0] >= 2), data=st.data())
def test_symmetric_players_get_equal_values(game, data) -> None:
    n, v = game
    i, j = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
    bi, bj = 1 << i, 1 << j
    # Symmetrise: v(S ∪ {i}) = v(S ∪ {j}) for S without i and j.
    v = v.copy()
    for mask in range(1 << n):
        if mask & bi and not mask & bj:
            v[mask] = v[(mask ^ bi) | bj]
    phi = exact_shapley(v, n)
    assert phi[i] == pytest.approx(phi[j], abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 7), seed=st.integers(0, 2**32 - 1), a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_additivity_and_linearity(n: int, seed: int, a: float, b: float) -> None:
    rng = np.random.default_rng(seed)
    v, w = rng.normal(size=1 << n), rng.normal(size=1 << n)
    np.testing.assert_allclose(
        exact_shapley(a * v + b * w, n),
        a * exact_shapley(v, n) + b * exact_shapley(w, n),
        atol=1e-9,
    )


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_matches_permutation_enumeration(n: int, seed: int) -> None:
    v = np.random.default_rng(seed).normal(size=1 << n)
    np.testing.assert_allclose(exact_shapley(v, n), naive_shapley(v, n), atol=1e-12)


def test_glove_game() -> None:
    # Players: L1 (bit 0), R1 (bit 1), R2 (bit 2); value = number of matched pairs.
    n = 3
    v = np.array([min(m & 1, bin(m >> 1).count("1")) for m in range(1 << n)], dtype=float)
    np.testing.assert_allclose(exact_shapley(v, n), [2 / 3, 1 / 6, 1 / 6], atol=1e-15)


def test_hand_computed_three_player_game() -> None:
    # A = bit 0, B = bit 1, C = bit 2.
    #      ∅  A   B   AB  C   AC  BC  ABC
    v = [0, 10, 20, 40, 30, 50, 60, 90]
    # φ_A = 10/3 + (40-20)/6 + (50-30)/6 + (90-60)/3 = 20, likewise φ_B = 30, φ_C = 40.
    np.testing.assert_allclose(exact_shapley(np.array(v, dtype=float), 3), [20, 30, 40], atol=1e-12)


def test_additive_game_gives_each_player_its_own_term() -> None:
    c = np.array([0.5, -2.0, 3.0, 0.0, 1.25])
    n = len(c)
    v = np.array([sum(c[i] for i in range(n) if m >> i & 1) for m in range(1 << n)])
    np.testing.assert_allclose(exact_shapley(v, n), c, atol=1e-12)


def test_efficiency_on_a_preference_game() -> None:
    """End to end with the utility module: the logsigmoid game is not additive, but
    efficiency still ties the values to v(N) − v(∅)."""
    M = np.random.default_rng(0).normal(size=(5, 30))
    v = coalition_utilities(M, all_masks(5), "logsigmoid", beta=0.5)
    assert exact_shapley(v, 5).sum() == pytest.approx(v[-1] - v[0], abs=1e-12)


def test_n20_is_fast() -> None:
    n = 20
    v = np.random.default_rng(1).normal(size=1 << n)
    start = time.perf_counter()
    phi = exact_shapley(v, n)
    assert time.perf_counter() - start < 5.0
    assert phi.sum() == pytest.approx(v[-1] - v[0], abs=1e-8)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="2\\*\\*3"):
        exact_shapley(np.zeros(7), 3)
    with pytest.raises(ValueError):
        exact_shapley(np.zeros((2, 4)), 2)
    with pytest.raises(ValueError, match="nan"):
        exact_shapley(np.array([0.0, np.nan]), 1)
    assert exact_shapley(np.array([3.0]), 0).shape == (0,)


def test_estimate_exact_result() -> None:
    v = np.array([0, 10, 20, 40, 30, 50, 60, 90], dtype=float)
    res = estimate_exact(["A", "B", "C"], v)
    assert isinstance(res, ValuationResult)
    assert res.players == ("A", "B", "C")
    np.testing.assert_allclose(res.values, [20, 30, 40])
    assert res.stderr.tolist() == [0.0, 0.0, 0.0]
    assert res.counts.tolist() == [8, 8, 8]
    assert res.estimator == "exact" and res.status == "converged"
    d = res.as_dict()
    assert d["B"] == {"value": pytest.approx(30.0), "stderr": 0.0, "count": 8}
    assert type(d["B"]["value"]) is float and type(d["B"]["count"]) is int
    with pytest.raises(ValueError):
        estimate_exact(["A", "B"], v)


def test_valuation_result_is_frozen_and_validated() -> None:
    res = estimate_exact(["A"], np.array([0.0, 1.0]))
    with pytest.raises(AttributeError):
        res.status = "failed"  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.values[0] = 5.0  # read-only array
    with pytest.raises(ValueError, match="values"):
        ValuationResult(("A", "B"), np.zeros(3), np.zeros(2), np.zeros(2), "x", "converged")
    with pytest.raises(ValueError, match="unique"):
        ValuationResult(("A", "A"), np.zeros(2), np.zeros(2), np.zeros(2), "x", "converged")


def test_weights_match_factorial_formula() -> None:
    """The 1/(n·C(n−1,k)) weights used internally equal k!(n−k−1)!/n!: check through
    the game where only coalitions of one size k pay off for player 0."""
    n = 5
    for k in range(n):
        v = np.zeros(1 << n)
        for mask in range(1 << n):
            if mask & 1 and bin(mask).count("1") == k + 1:
                v[mask] = 1.0
        expected = math.comb(n - 1, k) * math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
        assert exact_shapley(v, n)[0] == pytest.approx(expected, abs=1e-15)
