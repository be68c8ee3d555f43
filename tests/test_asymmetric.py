"""Asymmetric Shapley values (common.valuation.asymmetric) against hand computation and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.valuation.asymmetric import (
    asymmetric_from_table,
    extension_counts,
    parse_precedence,
    predecessors,
    random_orders,
)
from common.valuation.estimators import estimate
from common.valuation.game import Game
from common.valuation.shapley import ValueKind, exact_shapley
from common.valuation.stopping import MaxEvaluations, MaxSamples


def _by_orders(table: np.ndarray, n: int, precedence) -> np.ndarray:
    """The definition: mean marginal contribution over every allowed order, by listing them."""
    allowed = [o for o in itertools.permutations(range(n))
               if all(o.index(a) < o.index(b) for a, b in precedence)]
    phi = np.zeros(n)
    for order in allowed:
        mask = 0
        for i in order:
            phi[i] += table[mask | 1 << i] - table[mask]
            mask |= 1 << i
    return phi / len(allowed)


def test_a_hand_computed_three_owner_case() -> None:
    """v = 1 once both a and b are in (a unanimity game of {a, b}), c adds nothing.  Shapley
    splits it ½/½; with a < b every allowed order has b complete the pair: b gets 1, a 0."""
    table = np.array([0, 0, 0, 1, 0, 0, 0, 1], dtype=float)  # bit 0 = a, bit 1 = b, bit 2 = c
    np.testing.assert_allclose(exact_shapley(table, 3), [0.5, 0.5, 0.0])
    order = parse_precedence(["a<b"], ["a", "b", "c"])
    np.testing.assert_allclose(asymmetric_from_table(table, 3, order), [0.0, 1.0, 0.0], atol=1e-15)


def test_extension_counts_are_factorials_without_precedence_and_count_orders_with_one() -> None:
    e = extension_counts(4, predecessors(4, []))
    assert all(e[m] == math.factorial(bin(m).count("1")) for m in range(16))
    chain = extension_counts(4, predecessors(4, [(0, 1), (1, 2)]))  # 0 < 1 < 2, 3 free
    assert chain[15] == 4  # the chain in order, 3 in any of 4 places
    assert chain[0b0111] == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(0, 10_000), st.data())
def test_exact_values_equal_the_mean_over_allowed_orders_and_are_efficient(n: int, seed: int, data) -> None:
    rng = np.random.default_rng(seed)
    table = rng.normal(size=1 << n)
    pairs = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] < p[1]),
                               max_size=4))  # i < j only: never a cycle
    phi = asymmetric_from_table(table, n, pairs)
    np.testing.assert_allclose(phi, _by_orders(table, n, pairs), atol=1e-10)
    assert phi.sum() == pytest.approx(table[-1] - table[0], abs=1e-10)
    if not pairs:
        np.testing.assert_allclose(phi, exact_shapley(table, n), atol=1e-12)


def test_random_orders_respect_the_precedence_and_are_uniform_among_allowed_ones() -> None:
    n, precedence = 4, [(0, 1), (2, 1)]  # 0 and 2 before 1: 8 allowed orders of 24
    pred = predecessors(n, precedence)
    orders = random_orders(16_000, n, pred, extension_counts(n, pred), np.random.default_rng(0))
    assert all(sorted(o) == list(range(n)) for o in orders[:100].tolist())
    position = np.argsort(orders, axis=1)
    assert (position[:, 0] < position[:, 1]).all() and (position[:, 2] < position[:, 1]).all()
    _, freq = np.unique(orders, axis=0, return_counts=True)
    assert freq.size == 8 and freq.min() > 1_800 and freq.max() < 2_200  # 2,000 each expected


def test_bad_precedence_specs_are_refused_with_the_spec_named() -> None:
    players = ["a", "b", "c"]
    assert parse_precedence(["a<b,c", "b<c"], players) == ((0, 1), (0, 2), (1, 2))
    assert parse_precedence(["a,b<c"], players) == ((0, 2), (1, 2))
    with pytest.raises(ValueError, match="'a<x'.*x not among the owners"):
        parse_precedence(["a<x"], players)
    with pytest.raises(ValueError, match="cycle"):
        parse_precedence(["a<b<c", "c<a"], players)
    with pytest.raises(ValueError, match="separated by '<'"):
        parse_precedence(["a,b"], players)


def test_the_estimator_enumerates_at_full_budget_and_samples_below_it_within_its_stderr() -> None:
    rng = np.random.default_rng(5)
    n = 8
    table = rng.normal(size=1 << n)
    names = [f"p{i}" for i in range(n)]
    truth = asymmetric_from_table(table, n, [(0, 1), (1, 2), (3, 2)])
    spec = ["p0<p1<p2", "p3<p2"]
    # Allowed prefixes: 7 of the 16 subsets of {p0..p3} (p0 < p1 < p2, p3 < p2) times the 16 of the rest.
    game = Game.from_table(names, table)
    exact = estimate(game, "asymmetric", precedence=spec, stop=MaxEvaluations(112))
    assert exact.params["enumerated"] and exact.params["prefixes"] == 112 and game.computed == 112
    assert exact.kind == ValueKind.ASYMMETRIC
    np.testing.assert_allclose(exact.values, truth, atol=1e-12)
    walked = estimate(Game.from_table(names, table), "asymmetric", precedence=spec, stop=MaxSamples(10**6), seed=2)
    assert walked.params["exhausted"]  # it saw every allowed prefix: exact, not sampled
    np.testing.assert_allclose(walked.values, truth, atol=1e-12)
    sampled = estimate(Game.from_table(names, table), "asymmetric", precedence=spec, stop=MaxEvaluations(60), seed=1)
    assert sampled.params["precedence"] == "p0<p1; p1<p2; p3<p2"
    assert sampled.values.sum() == pytest.approx(table[-1] - table[0])  # every order telescopes
    assert np.all(np.abs(sampled.values - truth) <= 4 * sampled.stderr)
    plain = estimate(Game.from_table(names, table), "asymmetric", stop=MaxEvaluations(1 << n))
    np.testing.assert_allclose(plain.values, exact_shapley(table, n), atol=1e-12)
