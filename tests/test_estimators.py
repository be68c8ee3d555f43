"""Tests for common.valuation.estimators (and the closed forms of common.valuation.known_games)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.valuation.estimators import ESTIMATORS, EXACT_MAX_PLAYERS, auto_estimator, estimate
from common.valuation.game import Game
from common.valuation.known_games import additive_game, airport_game, glove_game, unanimity_game, weighted_voting_game
from common.valuation.regression import pair_leverage
from common.valuation.sampling import jump_variance
from common.valuation.shapley import beta_size_weights, exact_semivalue, exact_shapley
from common.valuation.stopping import MaxEvaluations, MaxSamples, MaxSeconds, RankStableFor, StderrBelow

SHAPLEY_SAMPLERS = ("stratified", "leverage", "kernel", "permutation", "truncated", "surrogate")
SAMPLING = SHAPLEY_SAMPLERS + ("banzhaf",)

KNOWN_GAMES = {
    "glove-1-2": lambda: glove_game(1, 2),
    "glove-3-5": lambda: glove_game(3, 5),
    "airport": lambda: airport_game([3, 1, 4, 1, 5, 9, 2]),
    "voting-50-49-1": lambda: weighted_voting_game([50, 49, 1], 51),
    "voting-6": lambda: weighted_voting_game([4, 3, 2, 1, 1, 2], 7),
    "additive": lambda: additive_game([0.5, -2.0, 3.0, 0.0, 1.25]),
    "unanimity": lambda: unanimity_game(6, [1, 3, 4]),
}


def table_game(table: np.ndarray) -> Game:
    n = int(np.log2(len(table)))
    return Game.from_table([f"p{i}" for i in range(n)], table)


def random_game(n: int, seed: int) -> tuple[Game, np.ndarray]:
    table = np.random.default_rng(seed).normal(size=1 << n)
    return table_game(table), table


def exact_banzhaf(table: np.ndarray, n: int) -> np.ndarray:
    """β_i = 2^{1−n} Σ_{S∌i} [v(S∪{i}) − v(S)], by enumeration."""
    masks = np.arange(1 << n)
    return np.array([np.mean(table[masks[(masks >> i) & 1 == 0] | (1 << i)] - table[masks[(masks >> i) & 1 == 0]])
                     for i in range(n)])


def full_table(game: Game) -> np.ndarray:
    return game.utilities(np.arange(1 << game.n))


# --------------------------------------------------------------------------- known games


def test_known_game_closed_forms() -> None:
    np.testing.assert_allclose(glove_game(1, 2)[1], [2 / 3, 1 / 6, 1 / 6], atol=1e-15)
    np.testing.assert_allclose(weighted_voting_game([50, 49, 1], 51)[1], [2 / 3, 1 / 6, 1 / 6], atol=1e-15)
    # Littlechild–Owen by hand: costs (1, 3, 6) -> 1/3, 1/3 + 2/2, 1/3 + 1 + 3
    np.testing.assert_allclose(airport_game([3, 1, 6])[1], [4 / 3, 1 / 3, 13 / 3], atol=1e-15)
    np.testing.assert_allclose(unanimity_game(4, [0, 2])[1], [0.5, 0, 0.5, 0])


@pytest.mark.parametrize("name", KNOWN_GAMES)
def test_closed_forms_agree_with_enumeration(name: str) -> None:
    game, phi = KNOWN_GAMES[name]()
    np.testing.assert_allclose(exact_shapley(full_table(game), game.n), phi, atol=1e-12)


@pytest.mark.parametrize("name", KNOWN_GAMES)
def test_exact_estimator_on_known_games(name: str) -> None:
    game, phi = KNOWN_GAMES[name]()
    res = estimate(game, "exact")
    np.testing.assert_allclose(res.values, phi, rtol=0, atol=1e-12)
    assert res.status == "converged" and res.stderr.tolist() == [0.0] * game.n
    assert res.counts.tolist() == [1 << game.n] * game.n
    assert res.params["evaluations"] == 1 << game.n == game.computed


# Games too big to enumerate within the budgets below (2ⁿ ≥ 8192), each with a closed form.
SAMPLED_GAMES = {
    "glove-6-8": lambda: glove_game(6, 8),
    "airport-13": lambda: airport_game([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9]),
    "voting-13": lambda: weighted_voting_game([9, 7, 5, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1], 23),
    "additive-14": lambda: additive_game(np.linspace(-1.0, 2.0, 14)),
    "unanimity-14": lambda: unanimity_game(14, [1, 3, 4, 10]),
}


@pytest.mark.parametrize("estimator", SHAPLEY_SAMPLERS)
@pytest.mark.parametrize("name", SAMPLED_GAMES)
def test_sampling_estimators_cover_the_truth(name: str, estimator: str) -> None:
    """Below 2ⁿ evaluations: every value within 4·stderr of the closed form, and a useful stderr."""
    if estimator == "truncated" and name == "additive-14":
        pytest.skip("TMC assumes later players add nothing once v(prefix) ≈ v(N): biased on non-monotone games")
    game, phi = SAMPLED_GAMES[name]()
    budget = 3_000
    assert budget < 1 << game.n
    res = estimate(game, estimator, stop=MaxEvaluations(budget), seed=1)
    assert "enumerated" not in res.params and res.params["evaluations"] <= budget + game.n
    scale = float(np.abs(phi).max())
    assert np.all(np.abs(res.values - phi) <= 4 * res.stderr + 1e-9 * scale), (res.values, phi, res.stderr)
    assert np.all(res.stderr < 0.2 * scale), res.stderr  # a fair budget gives a useful estimate
    assert res.values.sum() == pytest.approx(phi.sum(), abs=1e-9 * max(1.0, scale))  # efficiency


@pytest.mark.parametrize("estimator", SHAPLEY_SAMPLERS)
@pytest.mark.parametrize("name", KNOWN_GAMES)
def test_every_shapley_sampler_is_exact_once_the_budget_buys_every_coalition(name: str, estimator: str) -> None:
    game, phi = KNOWN_GAMES[name]()
    res = estimate(game, estimator, stop=MaxEvaluations(1 << game.n), seed=3)
    np.testing.assert_allclose(res.values, phi, atol=1e-12)
    assert res.stderr.tolist() == [0.0] * game.n and res.status == "converged"
    assert res.params["enumerated"] is True and res.params["evaluations"] == 1 << game.n
    assert res.estimator == estimator  # under its own name, with the reason in params


def test_kernel_on_a_ten_player_airport_game_is_exact_at_ten_thousand_evaluations() -> None:
    """Issue 15 regression: kernel never switched to enumeration (MAE 0.30 at 10,000
    evaluations on a 10-player airport game that 1,024 evaluations solve exactly)."""
    game, phi = airport_game([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    res = estimate(game, "kernel", stop=MaxEvaluations(10_000), seed=0)
    np.testing.assert_allclose(res.values, phi, atol=1e-12)
    assert res.params["evaluations"] == 1_024 == game.computed


@pytest.mark.parametrize("estimator", ["stratified", "surrogate", "leverage", "kernel"])
def test_size_stratified_samplers_end_exact_when_they_get_through_every_size(estimator: str) -> None:
    """Under a time limit they do not enumerate up front, but drawing without replacement they
    run out of coalitions after 2ⁿ evaluations and then report the exact values."""
    game, phi = airport_game([3, 1, 4, 1, 5, 9, 2])
    res = estimate(game, estimator, stop=MaxEvaluations(10_000) | MaxSeconds(60), seed=0)
    assert "enumerated" not in res.params and res.params["exhausted"] is True
    assert res.params["evaluations"] == 1 << game.n
    np.testing.assert_allclose(res.values, phi, atol=1e-9)
    assert np.all(res.stderr == 0) and res.status == "converged"


@pytest.mark.parametrize("name", KNOWN_GAMES)
def test_banzhaf_covers_exact_banzhaf(name: str) -> None:
    game, _ = KNOWN_GAMES[name]()
    truth = exact_banzhaf(full_table(game), game.n)
    res = estimate(game, "banzhaf", stop=MaxEvaluations(20_000), seed=2)
    assert res.estimator == "banzhaf"
    assert np.all(np.abs(res.values - truth) <= 4 * res.stderr + 1e-9), (res.values, truth, res.stderr)


def test_banzhaf_is_not_shapley() -> None:
    """Banzhaf is reported as itself: on the glove game it differs from Shapley and is not efficient."""
    game, phi = glove_game(1, 2)
    truth = exact_banzhaf(full_table(game), 3)
    np.testing.assert_allclose(truth, [3 / 4, 1 / 4, 1 / 4])
    assert truth.sum() != pytest.approx(1.0)
    res = estimate(game, "banzhaf", stop=MaxEvaluations(40_000), seed=0)
    np.testing.assert_allclose(res.values, truth, atol=0.03)
    assert res.params["semivalue"] == "banzhaf"


def test_loo_hand_values() -> None:
    #        ∅  A   B   AB  C   AC  BC  ABC
    game = table_game(np.array([0, 10, 20, 40, 30, 50, 60, 90], dtype=float))
    res = estimate(game, "loo")
    np.testing.assert_allclose(res.values, [90 - 60, 90 - 50, 90 - 40])
    assert res.stderr.tolist() == [0, 0, 0] and res.status == "converged"
    assert res.params["evaluations"] == 4 and game.computed == 4
    assert res.counts.tolist() == [2, 2, 2]
    # glove game: the scarce left glove is pivotal, each right glove is redundant
    np.testing.assert_allclose(estimate(glove_game(1, 2)[0], "loo").values, [1, 0, 0])


# --------------------------------------------------------------------------- axioms


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 6), seed=st.integers(0, 2**32 - 1))
def test_efficiency(n: int, seed: int) -> None:
    _, table = random_game(n, seed)
    total = table[-1] - table[0]
    for estimator in ("exact", "kernel", "permutation"):
        res = estimate(table_game(table), estimator, stop=MaxEvaluations(400), seed=seed)
        assert res.values.sum() == pytest.approx(total, abs=1e-9), estimator


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 6), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_symmetry_and_null_player_exact(n: int, seed: int, data) -> None:
    _, table = random_game(n, seed)
    i, j = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
    masks = np.arange(1 << n)
    sym = table.copy()
    with_i_only = ((masks >> i) & 1 == 1) & ((masks >> j) & 1 == 0)
    sym[with_i_only] = sym[(masks[with_i_only] ^ (1 << i)) | (1 << j)]
    phi = estimate(table_game(sym), "exact").values
    assert phi[i] == pytest.approx(phi[j], abs=1e-12)
    null = table.copy()
    null[(masks >> i) & 1 == 1] = null[masks[(masks >> i) & 1 == 1] ^ (1 << i)]
    assert estimate(table_game(null), "exact").values[i] == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- convergence


@pytest.mark.parametrize("estimator", SAMPLING)
def test_error_decreases_with_budget(estimator: str) -> None:
    n = 12
    _, table = random_game(n, 2024)
    truth = exact_banzhaf(table, n) if estimator == "banzhaf" else exact_shapley(table, n)

    def mean_error(budget: int) -> float:
        errors = [np.abs(estimate(table_game(table), estimator, stop=MaxEvaluations(budget), seed=s).values - truth)
                  for s in range(3)]
        return float(np.mean(errors))

    small, large = mean_error(300), mean_error(3_600)  # 12× the budget, still below 2¹² = 4096
    assert large < small / 2.5, (small, large)


def test_stderr_shrinks_with_budget() -> None:
    game, _ = glove_game(6, 8)
    for estimator in SHAPLEY_SAMPLERS:
        small = estimate(game, estimator, stop=MaxEvaluations(300), seed=0).stderr
        large = estimate(game, estimator, stop=MaxEvaluations(12_000), seed=0).stderr
        assert np.all(large < small / 3), (estimator, small, large)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("estimator", SAMPLING)
def test_same_seed_same_result_different_seed_different(estimator: str) -> None:
    _, table = random_game(10, 7)
    stop = MaxEvaluations(600)
    a = estimate(table_game(table), estimator, stop=stop, seed=11)
    b = estimate(table_game(table), estimator, stop=stop, seed=11)
    c = estimate(table_game(table), estimator, stop=stop, seed=12)
    for field in ("values", "stderr", "counts"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.params == b.params and a.status == b.status
    assert not np.array_equal(a.values, c.values)


def test_generator_seed_is_accepted() -> None:
    game, _ = random_game(5, 1)
    a = estimate(game, "permutation", stop=MaxSamples(10), seed=np.random.default_rng(3))
    b = estimate(game, "permutation", stop=MaxSamples(10), seed=np.random.default_rng(3))
    np.testing.assert_array_equal(a.values, b.values)
    with pytest.raises(ValueError, match="seed"):
        estimate(game, "permutation", seed="x")


# --------------------------------------------------------------------------- stopping and status


def test_status_and_stopped_by() -> None:
    game, _ = additive_game(np.arange(1.0, 19.0))  # every permutation is exact: stderr 0
    assert 10_000 * game.n < 1 << game.n  # the default budget does not buy every coalition
    res = estimate(game, "permutation")
    assert res.status == "converged"
    assert res.params["stopped_by"] == ["StderrBelow(0.001, min_samples=30)"]
    assert res.params["stop"] == "MaxEvaluations(180000) | StderrBelow(0.001, min_samples=30)"
    assert res.params["samples"] >= 30
    game, _ = glove_game(6, 8)
    res = estimate(game, "kernel", stop=MaxEvaluations(300) | StderrBelow(1e-6))
    assert res.status == "budget_exhausted" and res.params["stopped_by"] == ["MaxEvaluations(300)"]
    small, _ = glove_game(3, 5)  # 2⁸ = 256 coalitions: a budget of 300 enumerates them, converged
    res = estimate(small, "kernel", stop=MaxEvaluations(300) | StderrBelow(1e-6))
    assert res.status == "converged" and res.params["enumerated"] is True and res.params["stopped_by"] == []


@pytest.mark.parametrize("estimator", SAMPLING)
def test_budget_is_overshot_by_less_than_one_sample(estimator: str) -> None:
    """Batches shrink to what the budget still allows, so the last one cannot overshoot much."""
    game, _ = random_game(12, 3)
    res = estimate(game, estimator, stop=MaxEvaluations(1_000), seed=0)
    cost = {"permutation": 11, "truncated": 11, "banzhaf": 1}.get(estimator, 2)  # new coalitions per sample
    assert 1_000 <= res.params["evaluations"] < 1_000 + cost
    assert res.status == "budget_exhausted"


def test_max_samples_counts_permutations_or_antithetic_pairs() -> None:
    game, _ = random_game(8, 0)
    res = estimate(game, "permutation", stop=MaxSamples(10), seed=0)
    assert res.params["samples"] == 10 and res.params["antithetic"] is False  # the default: plain
    assert res.counts.tolist() == [2 * 10] * 8  # 2 utilities per marginal, 1 permutation per sample
    assert res.params["evaluations"] <= 2 + 10 * 7  # ∅ and N once, at most 7 new prefixes each
    paired = estimate(game, "permutation", stop=MaxSamples(10), seed=0, antithetic=True)
    assert paired.params["samples"] == 10
    assert paired.counts.tolist() == [2 * 2 * 10] * 8  # 2 permutations per sample
    assert paired.params["evaluations"] <= 2 + 20 * 7


def test_antithetic_default_is_off_because_it_hurts_on_majority_games() -> None:
    """Issue 15: antithetic pairs were 1.4–1.5× less accurate than plain permutations on
    weighted-majority games at equal budget, so plain permutations are the default."""
    game, phi = weighted_voting_game([9, 7, 5, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1], 23)

    def mae(antithetic: bool) -> float:
        return float(np.mean([np.abs(estimate(game, "permutation", stop=MaxEvaluations(2_000), seed=s,
                                              antithetic=antithetic).values - phi).mean() for s in range(8)]))

    assert mae(False) < mae(True)


@pytest.mark.parametrize("estimator", ["permutation", "stratified"])
def test_max_seconds_stops_a_slow_game(estimator: str) -> None:
    """A time limit is never traded for an up-front enumeration, even with a budget above 2ⁿ."""
    def slow(masks: np.ndarray) -> np.ndarray:
        time.sleep(0.01)
        return masks.astype(float) ** 0.5

    game = Game([f"p{i}" for i in range(20)], slow)
    start = time.perf_counter()
    res = estimate(game, estimator, stop=MaxSeconds(0.3) | MaxEvaluations(10**9), seed=0)
    assert time.perf_counter() - start < 2.0
    assert res.status == "budget_exhausted" and res.params["stopped_by"] == ["MaxSeconds(0.3)"]
    assert auto_estimator(20, MaxSeconds(0.3) | MaxEvaluations(10**9)) == "surrogate"


def test_convergence_rule_in_a_composite_gives_converged() -> None:
    # Distinct costs: the ranking settles long before the 2¹⁴ coalitions are all seen.
    game, _ = airport_game([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    res = estimate(game, "permutation", stop=RankStableFor(3) | MaxSamples(10**6), seed=0)
    assert res.status == "converged" and res.params["stopped_by"] == ["RankStableFor(3)"]


def test_rule_objects_are_not_mutated_by_a_run() -> None:
    rule = RankStableFor(2) | MaxEvaluations(5_000)
    game, _ = glove_game(2, 3)
    a = estimate(game, "permutation", stop=rule, seed=0)
    b = estimate(game, "permutation", stop=rule, seed=0)
    np.testing.assert_array_equal(a.values, b.values)
    assert rule.rules[0]._ranking is None  # the run worked on a copy


# --------------------------------------------------------------------------- evaluations vs computed


@pytest.mark.parametrize("estimator", SAMPLING + ("exact", "loo"))
def test_evaluations_and_computed_are_consistent(estimator: str) -> None:
    game, _ = random_game(6, 5)
    first = estimate(game, estimator, stop=MaxSamples(40), seed=0)
    assert first.params["evaluations"] == game.computed <= game.requested  # distinct, on a fresh game
    assert 0 < game.computed <= 1 << 6
    computed = game.computed
    again = estimate(game, estimator, stop=MaxSamples(40), seed=0)
    assert game.computed == computed  # memo hits are not computed again
    assert again.params["evaluations"] == first.params["evaluations"]  # ... but count in each run's budget
    np.testing.assert_array_equal(again.values, first.values)


@pytest.mark.parametrize("estimator", SAMPLING)
def test_a_repeated_coalition_does_not_consume_budget_twice(estimator: str) -> None:
    """Issue 15: memo hits (∅ and N in every permutation, repeated draws) counted against the
    budget. Now the budget is distinct coalitions: the game is asked for exactly that many."""
    asked: list[int] = []

    def utility(masks: np.ndarray) -> np.ndarray:
        asked.extend(masks.tolist())
        return np.sqrt(masks.astype(float))

    game = Game([f"p{i}" for i in range(12)], utility)
    res = estimate(game, estimator, stop=MaxEvaluations(800), seed=0)
    assert len(asked) == len(set(asked)) == res.params["evaluations"] == game.computed
    assert 800 <= res.params["evaluations"] < 800 + 11


@pytest.mark.parametrize("estimator", ["stratified", "surrogate", "leverage", "kernel"])
def test_size_samplers_draw_without_replacement(estimator: str) -> None:
    """Every coalition they request is new (kernel sampled with replacement: ~37% repeats at n = 20)."""
    requested: list[int] = []

    def utility(masks: np.ndarray) -> np.ndarray:
        requested.extend(masks.tolist())
        return np.sqrt(masks.astype(float))

    game = Game([f"p{i}" for i in range(20)], utility)
    game.utilities = lambda masks: utility(np.asarray(masks))  # bypass the memo: see every request
    res = estimate(game, estimator, stop=MaxEvaluations(5_000), seed=0)
    assert len(requested) == len(set(requested)) == res.params["evaluations"]


def test_truncation_saves_utilities_on_a_saturating_game() -> None:
    """Three votes out of twelve already win: later players add nothing, so TMC stops early."""
    runs = {}
    for estimator in ("permutation", "truncated"):
        game, phi = weighted_voting_game([1] * 12, 3)
        res = estimate(game, estimator, stop=MaxSamples(20), seed=0, antithetic=True)
        runs[estimator] = (res, game.computed)
    (perm, perm_computed), (tmc, tmc_computed) = runs["permutation"], runs["truncated"]
    assert tmc.params["samples"] == perm.params["samples"] == 20  # same permutations (same seed)
    assert tmc_computed < perm_computed / 2
    assert tmc.params["evaluations"] < perm.params["evaluations"] / 2
    assert np.all(tmc.counts < perm.counts)
    # saturation is exact here, so truncation changes nothing but the cost
    np.testing.assert_allclose(tmc.values, perm.values, atol=1e-12)


def test_truncation_is_blind_to_an_offset_in_the_utility() -> None:
    """Issue 15 regression: with v = 100 + Σw the tolerance was relative to |v(N)| and tested
    against v(∅), so every permutation was truncated before its first player: all values 0,
    stderr 0, Σφ = 0 instead of v(N) − v(∅). An offset changes no marginal, so it must change
    no estimate."""
    weights = np.array([0.01, 0.02, 0.03, 0.005, 0.015])  # small next to the offset: where it bit
    plain, phi = additive_game(weights)
    shifted = Game.from_table(plain.players, 100.0 + plain.utilities(np.arange(1 << len(weights))))
    a = estimate(plain, "truncated", stop=MaxSamples(16), seed=3)
    b = estimate(shifted, "truncated", stop=MaxSamples(16), seed=3)
    np.testing.assert_allclose(b.values, a.values, atol=1e-9)
    np.testing.assert_allclose(b.values, phi, atol=1e-9)  # additive: every marginal is exact
    assert b.values.sum() == pytest.approx(weights.sum()) and np.all(b.counts > 0)


def test_a_game_whose_grand_coalition_is_worth_the_empty_one_is_never_truncated() -> None:
    """v(N) = v(∅) does not make every value 0 (here a: +1, b: −1)."""
    game = Game.from_function(["a", "b"], lambda s: {frozenset(): 0.0, frozenset({"a"}): 1.0,
                                                     frozenset({"b"}): -1.0, frozenset({"a", "b"}): 0.0}[s])
    res = estimate(game, "truncated", stop=MaxSamples(8), seed=0)
    np.testing.assert_allclose(res.values, [1.0, -1.0])


def test_truncation_tolerance_zero_walks_everything() -> None:
    game, _ = weighted_voting_game([1] * 6, 3)
    res = estimate(game, "truncated", stop=MaxSamples(10), seed=0, truncation_tolerance=0.0)
    assert res.counts.tolist() == [2 * 10] * 6


# --------------------------------------------------------------------------- entry point


def test_registry_and_auto() -> None:
    assert set(ESTIMATORS) == {"exact", "surrogate", "stratified", "leverage", "permutation", "truncated", "kernel",
                               "asymmetric", "banzhaf", "beta", "loo"}
    small, _ = additive_game(np.arange(16.0))
    res = estimate(small, seed=0)
    assert res.estimator == "exact" and res.params["auto"] is True
    big, phi = additive_game(np.arange(EXACT_MAX_PLAYERS + 1.0))
    res = estimate(big, seed=0)
    assert res.estimator == "surrogate" and res.params["auto"] is True
    assert res.params["surrogate"] == "polynomial"  # an additive game: the order-1 fit is exact
    np.testing.assert_allclose(res.values, phi, atol=1e-6)
    tiny = estimate(additive_game([1.0, 2.0])[0], exact_max_players=1)  # samples, but 4 coalitions fit the budget
    assert tiny.estimator == "surrogate" and tiny.params["enumerated"] is True
    # the rule: enumerate when no budget is given up to exact_max_players, or when the budget buys 2ⁿ
    assert auto_estimator(16, None) == "exact" and auto_estimator(21, None) == "surrogate"
    assert auto_estimator(16, MaxEvaluations(1_000)) == "surrogate"
    assert auto_estimator(16, MaxEvaluations(1 << 16)) == "exact"
    assert auto_estimator(22, MaxEvaluations(1 << 22)) == "exact"  # above exact_max_players, but bought
    assert auto_estimator(10, StderrBelow(0.01)) == "exact"  # a convergence rule is no budget
    assert auto_estimator(10, MaxEvaluations(5_000) | MaxSeconds(1)) == "surrogate"  # time-limited


def test_bad_arguments() -> None:
    game, _ = additive_game([1.0, 2.0])
    with pytest.raises(ValueError, match="unknown estimator"):
        estimate(game, "magic")
    with pytest.raises(TypeError):
        estimate(game, "permutation", stop=100)
    with pytest.raises(TypeError):
        estimate(game, "permutation", tolerance=0.1)  # not a permutation parameter
    with pytest.raises(ValueError, match="batch_size"):
        estimate(game, "kernel", batch_size=0)


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_one_and_zero_players(estimator: str) -> None:
    game = table_game(np.array([2.0, 5.0]))
    res = estimate(game, estimator, stop=MaxEvaluations(50), seed=0)
    np.testing.assert_allclose(res.values, [3.0])
    # Every sample of a one-player game has the same marginal v({p0}) − v(∅) = 3: a sampling run
    # with ≥ 2 samples has a defined (finite) stderr, and it is 0; enumerating methods report 0.
    if estimator in SHAPLEY_SAMPLERS:  # nothing to sample: the one marginal is φ
        assert res.params["samples"] == 0 and res.params["enumerated"] is True and res.status == "converged"
    elif estimator == "banzhaf":
        assert res.params["evaluations"] == 2 and res.params["exhausted"] is True
    assert res.stderr.tolist() == [0.0], res.stderr
    empty = estimate(Game([], lambda m: np.zeros(len(m))), estimator)
    assert empty.values.shape == (0,) and empty.status == "converged"


def test_result_is_json_friendly() -> None:
    """Strict JSON (no NaN/Infinity) that reads back to the same numbers, which are the game's values."""
    import json

    game, phi = glove_game(2, 2)  # symmetric: every glove is worth (v(N) − v(∅)) / 4 = 0.5
    np.testing.assert_allclose(phi, [0.5] * 4)
    banzhaf_truth = exact_banzhaf(full_table(game), 4)
    for estimator in ESTIMATORS:
        res = estimate(game, estimator, stop=MaxEvaluations(200), seed=0)
        text = json.dumps({"params": res.params, "values": res.as_dict()}, allow_nan=False)
        back = json.loads(text)
        assert back["params"] == res.params, estimator
        assert list(back["values"]) == list(game.players)
        for i, player in enumerate(game.players):
            assert back["values"][player] == {"value": float(res.values[i]), "stderr": float(res.stderr[i]),
                                              "count": int(res.counts[i])}, (estimator, player)
        assert np.all(np.isfinite(res.stderr)) and np.all(res.stderr >= 0), estimator
        if estimator == "exact":
            np.testing.assert_allclose(res.values, phi, atol=1e-12)
        elif estimator == "loo":  # v(N) − v(N∖{i}) = 2 − 1 for every glove
            np.testing.assert_allclose(res.values, [1.0] * 4, atol=1e-12)
        else:
            truth = {"banzhaf": banzhaf_truth, "beta": exact_semivalue(full_table(game), 4, beta_size_weights(4, 16, 1))
                     }.get(estimator, phi)
            assert np.all(np.abs(res.values - truth) <= 4 * res.stderr + 1e-9), (estimator, res.values, res.stderr)


@pytest.mark.parametrize("estimator", ["permutation", "truncated"])
def test_stderr_is_infinite_for_one_sample_then_finite_and_positive(estimator: str) -> None:
    """A sample variance needs two samples: inf with one, then finite and positive on a game whose
    marginals vary, and it covers the exact value."""
    game, table = random_game(10, 4)
    truth = exact_shapley(table, 10)
    one = estimate(game, estimator, stop=MaxSamples(1), seed=0)
    assert one.params["samples"] == 1 and np.all(np.isinf(one.stderr))
    for samples in (2, 3, 50):
        res = estimate(game, estimator, stop=MaxSamples(samples), seed=0)
        assert res.params["samples"] == samples
        assert np.all(np.isfinite(res.stderr)) and np.all(res.stderr > 0), (samples, res.stderr)
    res = estimate(game, estimator, stop=MaxSamples(100), seed=0)
    assert "exhausted" not in res.params
    assert np.all(np.abs(res.values - truth) <= 4 * res.stderr), (res.values, truth, res.stderr)


def test_banzhaf_stderr_needs_two_samples_on_each_side_of_every_player() -> None:
    """MSR compares coalitions with and without each player: the stderr is defined (finite) exactly
    when both groups of every player hold ≥ 2 samples."""
    game, table = random_game(4, 6)
    for samples in (1, 2, 3, 4, 8, 40):
        res = estimate(game, "banzhaf", stop=MaxSamples(samples), seed=0, batch_size=1)
        assert res.params["samples"] == samples
        # redraw the same coalitions: the estimator's only randomness is rng.random((k, n)) per batch
        rng = np.random.default_rng(0)
        members = np.concatenate([rng.random((1, 4)) < 0.5 for _ in range(samples)])
        inside = members.sum(axis=0)
        defined = (inside >= 2) & (samples - inside >= 2)
        assert np.array_equal(np.isfinite(res.stderr), defined), (samples, inside, res.stderr)
        assert np.all(res.stderr[defined] > 0)


@pytest.mark.parametrize("estimator", ["kernel", "leverage"])
def test_regression_stderr_does_not_claim_certainty_from_too_few_pairs(estimator: str) -> None:
    """With no more pairs than players the fit has no residual to measure: stderr inf, then finite."""
    game, table = random_game(10, 0)
    truth = exact_shapley(table, 10)
    for samples in (2, 5, 10):
        res = estimate(game, estimator, stop=MaxSamples(samples), seed=0, batch_size=1)
        assert res.params["samples"] == samples and np.all(np.isinf(res.stderr)), (samples, res.stderr)
    res = estimate(game, estimator, stop=MaxSamples(200), seed=0, batch_size=1)
    error = np.abs(res.values - truth)
    assert np.all(np.isfinite(res.stderr)) and np.all(error <= 4 * res.stderr), (error, res.stderr)
    big, phi = glove_game(25, 35)
    res = estimate(big, estimator, stop=MaxEvaluations(20_000) | StderrBelow(1e-3), seed=0, batch_size=32)
    assert res.status == "budget_exhausted" or np.abs(res.values - phi).max() < 0.05


def test_sampling_estimators_record_a_thinned_convergence_trace():
    from common.valuation.sampling import TRACE_MAX_POINTS, thin_trace

    game = Game.from_function([f"p{i}" for i in range(10)], lambda s: float(len(s)) ** 1.5)
    result = estimate(game, "permutation", stop=MaxEvaluations(600), seed=1)
    trace = result.trace
    assert 1 < len(trace) <= TRACE_MAX_POINTS
    evaluations = [t["evaluations"] for t in trace]
    assert evaluations == sorted(evaluations) and evaluations[-1] == result.params["evaluations"]
    assert trace[-1]["values"] == {p: float(v) for p, v in zip(result.players, result.values)}
    assert estimate(Game.from_function(["a", "b"], len), "exact").trace == ()
    points = [{"evaluations": i} for i in range(1000)]
    thinned = thin_trace(points, 50)
    assert len(thinned) == 50 and thinned[0] is points[0] and thinned[-1] is points[-1]


# --------------------------------------------------------------------------- properties of the samplers


@settings(max_examples=40, deadline=None)
@given(n=st.integers(4, 9), seed=st.integers(0, 2**31), estimator=st.sampled_from(SHAPLEY_SAMPLERS),
       offset=st.floats(-100.0, 100.0), scale=st.floats(0.1, 10.0))
def test_sampled_values_are_efficient_and_equivariant(n: int, seed: int, estimator: str, offset: float,
                                                      scale: float) -> None:
    """Below 2ⁿ evaluations: Σφ = v(N) − v(∅), and v → a + b·v gives φ → b·φ, stderr → b·stderr
    (same seed, same draws): the estimators see only what the players share."""
    _, table = random_game(n, seed)
    stop = MaxEvaluations((1 << n) // 2)
    a = estimate(table_game(table), estimator, stop=stop, seed=seed)
    assert "enumerated" not in a.params
    total = table[-1] - table[0]
    if estimator == "truncated":  # a truncated walk stops within its tolerance of v(N)
        assert abs(a.values.sum() - total) <= 1e-3 * abs(total) + 1e-9
    else:
        assert a.values.sum() == pytest.approx(total, abs=1e-9)
    b = estimate(table_game(offset + scale * table), estimator, stop=stop, seed=seed)
    np.testing.assert_allclose(b.values, scale * a.values, rtol=1e-6, atol=1e-7 * scale)
    np.testing.assert_allclose(b.stderr, scale * a.stderr, rtol=1e-6, atol=1e-7 * scale)
    assert b.params["evaluations"] == a.params["evaluations"]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(5, 10), seed=st.integers(0, 2**31), estimator=st.sampled_from(SHAPLEY_SAMPLERS[:4]),
       data=st.data())
def test_sampled_values_respect_symmetry_and_null_players_within_their_stderr(n: int, seed: int, estimator: str,
                                                                             data) -> None:
    """Player i and j interchangeable, player k adds nothing: the estimates say so up to their
    own uncertainty (5 stderr), which also checks that the stderr is honest."""
    i, j, k = data.draw(st.lists(st.integers(0, n - 1), min_size=3, max_size=3, unique=True))
    _, table = random_game(n, seed)
    masks = np.arange(1 << n)
    sym = table.copy()  # v(S ∪ {i}) = v(S ∪ {j}) for S without both
    with_i_only = ((masks >> i) & 1 == 1) & ((masks >> j) & 1 == 0)
    sym[with_i_only] = sym[(masks[with_i_only] ^ (1 << i)) | (1 << j)]
    holds_k = (masks >> k) & 1 == 1
    sym[holds_k] = sym[masks[holds_k] ^ (1 << k)]
    truth = exact_shapley(sym, n)
    assert truth[i] == pytest.approx(truth[j]) and truth[k] == pytest.approx(0.0, abs=1e-12)
    res = estimate(table_game(sym), estimator, stop=MaxEvaluations((1 << n) // 3), seed=seed)
    se = res.stderr
    assert abs(res.values[i] - res.values[j]) <= 5 * np.hypot(se[i], se[j]) + 1e-9, (res.values, se)
    assert abs(res.values[k]) <= 5 * se[k] + 1e-9, (res.values, se)


@pytest.mark.parametrize("estimator", SHAPLEY_SAMPLERS)
def test_two_stderr_coverage_is_calibrated_on_known_games(estimator: str) -> None:
    """Issue 15: ±2·stderr must hold the truth for about 95% of players (pooled), not 10–46%.
    30 seeds × 13 players on airport and weighted voting, at budgets below 2ⁿ."""
    hits = []
    for game_name in ("airport-13", "voting-13"):
        game, phi = SAMPLED_GAMES[game_name]()
        for budget in (300, 2_000):
            for seed in range(15):
                res = estimate(game, estimator, stop=MaxEvaluations(budget), seed=seed)
                hits.append(np.abs(res.values - phi) <= 2 * res.stderr + 1e-9)
    coverage = float(np.mean(hits))
    assert 0.88 <= coverage <= 0.995, coverage


@pytest.mark.parametrize("estimator", ["permutation", "truncated"])
def test_rarely_pivotal_players_are_not_reported_as_known(estimator: str) -> None:
    """Symmetric majority of 30 at a budget where each player is pivotal about once: most
    players were pivotal 0–2 times, and ±2·stderr still holds φ = 1/30 for ≥ 85% of them
    (57–75% before the rare-jump floor)."""
    game, phi = weighted_voting_game([1] * 30, 16)
    hits = [np.abs(res.values - phi) <= 2 * res.stderr + 1e-12
            for res in (estimate(game, estimator, stop=MaxEvaluations(900), seed=seed) for seed in range(10))]
    assert 0.85 <= float(np.mean(hits)) <= 1.0


def test_jump_variance_is_the_bernoulli_variance_with_enough_jumps() -> None:
    """Marginals 0 or J with rate p: from many samples the floor is about p(1 − p)·J², and a
    cell never seen jumping still borrows the pool's jump size instead of 0."""
    rng = np.random.default_rng(0)
    c, p, jump = 20_000, np.array([0.02, 0.3, 0.0]), 2.0
    x = (rng.random((c, 3)) < p) * jump
    floor = jump_variance(np.full(3, c), (x != 0).sum(axis=0), x.sum(axis=0), (x**2).sum(axis=0))
    np.testing.assert_allclose(floor[:2], p[:2] * (1 - p[:2]) * jump**2, rtol=0.1)
    assert floor[2] == pytest.approx(jump**2 / (c + 2))  # Laplace's rate 1/(c + 2) of the pooled jump²


@settings(max_examples=20, deadline=None)
@given(st.integers(3, 12), st.integers(0, 10_000))
def test_pair_leverages_are_shares_that_sum_to_the_free_values(n: int, seed: int) -> None:
    """HC2's leverages: each in [0, 1], and their sum the trace of the constrained fit's hat
    matrix: the design's rank less one (the efficiency constraint fixes one value), n − 1 when
    the sampled coalitions determine every value. A few seeds draw a rank-deficient design at
    n = 3 (seed 1949 does), and the trace is then rank − 1, not n − 1."""
    rng = np.random.default_rng(seed)
    m = 4 * n
    z = (rng.random((m, n)) < rng.uniform(0.2, 0.8, size=(m, 1))).astype(np.float64)
    weight = rng.uniform(0.5, 2.0, size=m)
    zc = 1.0 - z
    a = (z * weight[:, None]).T @ z + (zc * weight[:, None]).T @ zc
    kkt = np.block([[a, np.ones((n, 1))], [np.ones((1, n)), np.zeros((1, 1))]])
    leverage = pair_leverage(z, weight, np.linalg.pinv(kkt)[:n, :n])
    assert leverage.min() >= -1e-9 and leverage.max() <= 1 + 1e-9
    assert leverage.sum() == pytest.approx(np.linalg.matrix_rank(a) - 1, abs=1e-6)
