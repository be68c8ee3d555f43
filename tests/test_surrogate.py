"""Tests for common.valuation.surrogate: tree and polynomial fits, their exact Shapley values,
and the cross-fitted control-variate estimator built on them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.valuation.estimators import estimate
from common.valuation.game import Game
from common.valuation.known_games import airport_game, weighted_voting_game
from common.valuation.shapley import exact_shapley
from common.valuation.stopping import MaxEvaluations
from common.valuation.surrogate import fit_polynomial, fit_tree, tree_shapley


def _pairwise(n: int, seed: int) -> tuple[Game, np.ndarray, np.ndarray]:
    """v(S) = Σ_{i∈S} w_i + Σ_{i<j∈S} a_ij: φ_i = w_i + ½ Σ_j a_ij."""
    rng = np.random.default_rng(seed)
    w, a = rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1)
    bits = np.int64(1) << np.arange(n, dtype=np.int64)

    def utility(masks: np.ndarray) -> np.ndarray:
        z = ((masks[:, None] & bits) != 0).astype(float)
        return z @ w + np.einsum("ki,ij,kj->k", z, a, z)

    return Game([f"p{i}" for i in range(n)], utility), w + (a.sum(axis=1) + a.sum(axis=0)) / 2, a


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 9), seed=st.integers(0, 2**31), rows=st.integers(1, 200), leaves=st.integers(1, 40))
def test_tree_shapley_equals_enumerating_the_tree(n: int, seed: int, rows: int, leaves: int) -> None:
    """The closed form over leaves (present/absent literals) is the Shapley value of the tree's game."""
    rng = np.random.default_rng(seed)
    masks = rng.integers(0, 1 << n, size=rows).astype(np.int64)
    tree = fit_tree(masks, rng.normal(size=rows), n, max_leaves=leaves)
    assert 1 <= tree.leaves <= leaves
    table = tree.predict(np.arange(1 << n, dtype=np.int64))
    np.testing.assert_allclose(tree_shapley(tree, n), exact_shapley(table, n), atol=1e-12)


def test_a_tree_fits_an_airport_game_exactly() -> None:
    """v(S) = the largest cost in S is a chain of membership tests: a few hundred coalitions
    (with ∅ and N) teach it to a tree, whose Shapley values are then the exact ones."""
    game, phi = airport_game([3, 1, 4, 1.5, 5, 9, 2, 6, 5.5, 3.5])
    rng = np.random.default_rng(0)
    masks = np.concatenate([rng.integers(0, 1 << 10, size=600), [0, (1 << 10) - 1]]).astype(np.int64)
    tree = fit_tree(masks, game.utilities(masks), 10, max_leaves=64)
    everything = np.arange(1 << 10, dtype=np.int64)
    np.testing.assert_allclose(tree.predict(everything), game.utilities(everything), atol=1e-12)
    np.testing.assert_allclose(tree_shapley(tree, 10), phi, atol=1e-12)


def test_a_polynomial_fits_a_pairwise_game_and_knows_its_shapley_values() -> None:
    game, phi, _ = _pairwise(8, 3)
    masks = np.random.default_rng(1).integers(0, 1 << 8, size=200).astype(np.int64)
    poly = fit_polynomial(masks, game.utilities(masks), 8)
    assert poly.terms == 8 + 28  # 200 ≥ 2·(8 + 28) coalitions: order 2
    np.testing.assert_allclose(poly.shapley(), phi, atol=1e-6)
    table = poly.predict(np.arange(1 << 8, dtype=np.int64))
    np.testing.assert_allclose(exact_shapley(table, 8), poly.shapley(), atol=1e-9)
    additive = fit_polynomial(masks[:40], game.utilities(masks[:40]), 8)
    assert additive.terms == 8 and not additive.interactions.any()  # too few coalitions for the pair terms: order 1


def test_surrogate_beats_plain_stratified_where_a_tree_explains_the_game() -> None:
    game, phi = airport_game([3, 1, 4, 1.5, 5, 9, 2, 6, 5.5, 3.5, 8, 7, 2.5])
    errors = {"stratified": [], "surrogate": []}
    for seed in range(5):
        for estimator in errors:
            res = estimate(game, estimator, stop=MaxEvaluations(2_000), seed=seed)
            errors[estimator].append(np.abs(res.values - phi).mean())
            if estimator == "surrogate":
                assert res.params["surrogate"] == "tree"
                assert np.all(np.abs(res.values - phi) <= 4 * res.stderr + 1e-9)
                assert res.values.sum() == pytest.approx(phi.sum(), abs=1e-9)
    assert np.mean(errors["surrogate"]) < np.mean(errors["stratified"]) / 5, errors


def test_surrogate_is_exact_on_a_pairwise_game_below_two_to_the_n() -> None:
    game, phi, _ = _pairwise(12, 0)
    res = estimate(game, "surrogate", stop=MaxEvaluations(2_000), seed=0)
    assert res.params["surrogate"] == "polynomial" and "enumerated" not in res.params
    np.testing.assert_allclose(res.values, phi, atol=1e-6)


def test_surrogate_keeps_the_plain_estimate_when_no_fit_helps() -> None:
    """Same seed, same draws: where neither fit lowers the variance the result *is* stratified's."""
    game, _ = weighted_voting_game([9, 7, 5, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1], 25)
    plain = estimate(game, "stratified", stop=MaxEvaluations(2_000), seed=4)
    tried = estimate(game, "surrogate", stop=MaxEvaluations(2_000), seed=4)
    assert tried.params["evaluations"] == plain.params["evaluations"]
    if tried.params["surrogate"] == "none":
        np.testing.assert_array_equal(tried.values, plain.values)
        np.testing.assert_array_equal(tried.stderr, plain.stderr)
    else:  # a fit was kept: it must have claimed a smaller variance
        assert (tried.stderr**2).sum() < (plain.stderr**2).sum()


def test_surrogate_needs_enough_coalitions_to_fit() -> None:
    game, _ = airport_game(list(range(1, 21)))
    res = estimate(game, "surrogate", stop=MaxEvaluations(100), seed=0)  # < 8 per player
    assert res.params["surrogate"].startswith("not used")


def test_a_tree_that_interpolates_every_coalition_is_refitted_on_all_of_them() -> None:
    """16-player airport, 2,000 of 65,536 coalitions: the tree refitted on every evaluated
    coalition is the game itself, so the values are exact — the cross-fitted halves alone
    (half the data each) were 1e-4 off at n = 20 — and Σφ = v(N) − v(∅) still holds."""
    game, phi = airport_game(list(np.random.default_rng(1).integers(1, 100, 16) / 100))
    for seed in range(3):
        res = estimate(game, "surrogate", stop=MaxEvaluations(2_000), seed=seed)
        assert res.params["surrogate"] == "tree" and res.params["surrogate_refit"] is True
        np.testing.assert_allclose(res.values, phi, atol=1e-12)
        assert res.values.sum() == pytest.approx(phi.sum(), abs=1e-12)
        assert np.all(np.abs(res.values - phi) <= 2 * res.stderr + 1e-12)
