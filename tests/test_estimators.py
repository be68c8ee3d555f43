"""Tests for common.valuation.estimators (and the closed forms of common.valuation.known_games)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.valuation.estimators import ESTIMATORS, EXACT_MAX_PLAYERS, estimate
from common.valuation.game import Game
from common.valuation.known_games import additive_game, airport_game, glove_game, unanimity_game, weighted_voting_game
from common.valuation.shapley import exact_shapley
from common.valuation.stopping import MaxEvaluations, MaxSamples, MaxSeconds, RankStableFor, StderrBelow

SAMPLING = ("permutation", "truncated", "kernel", "banzhaf")

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


@pytest.mark.parametrize("estimator", ["permutation", "truncated", "kernel"])
@pytest.mark.parametrize("name", KNOWN_GAMES)
def test_sampling_estimators_cover_the_truth(name: str, estimator: str) -> None:
    game, phi = KNOWN_GAMES[name]()
    res = estimate(game, estimator, stop=MaxEvaluations(20_000) | StderrBelow(1e-3), seed=1)
    assert np.all(np.abs(res.values - phi) <= 4 * res.stderr + 1e-9), (res.values, phi, res.stderr)
    assert np.all(res.stderr < 0.05)  # a fair budget gives a useful estimate, not just a wide interval


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


@pytest.mark.parametrize("estimator", ["permutation", "kernel", "banzhaf"])
def test_error_decreases_with_budget(estimator: str) -> None:
    n = 8
    _, table = random_game(n, 2024)
    truth = exact_banzhaf(table, n) if estimator == "banzhaf" else exact_shapley(table, n)

    def mean_error(budget: int) -> float:
        errors = [np.abs(estimate(table_game(table), estimator, stop=MaxEvaluations(budget), seed=s).values - truth)
                  for s in range(3)]
        return float(np.mean(errors))

    small, large = mean_error(400), mean_error(40_000)
    assert large < small / 3, (small, large)


def test_stderr_shrinks_with_budget() -> None:
    game, _ = glove_game(3, 5)
    small = estimate(game, "permutation", stop=MaxEvaluations(500), seed=0).stderr
    large = estimate(game, "permutation", stop=MaxEvaluations(50_000), seed=0).stderr
    assert np.all(large < small / 3)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("estimator", SAMPLING)
def test_same_seed_same_result_different_seed_different(estimator: str) -> None:
    _, table = random_game(6, 7)
    stop = MaxEvaluations(1_000)
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
    game, _ = additive_game([1.0, 2.0, 3.0, 4.0])  # every permutation is exact: stderr 0
    res = estimate(game, "permutation")
    assert res.status == "converged"
    assert res.params["stopped_by"] == ["StderrBelow(0.001, min_samples=30)"]
    assert res.params["stop"] == "MaxEvaluations(40000) | StderrBelow(0.001, min_samples=30)"
    assert res.params["samples"] >= 30
    game, _ = glove_game(3, 5)
    res = estimate(game, "kernel", stop=MaxEvaluations(300) | StderrBelow(1e-6))
    assert res.status == "budget_exhausted" and res.params["stopped_by"] == ["MaxEvaluations(300)"]


@pytest.mark.parametrize("estimator", SAMPLING)
def test_budget_is_overshot_by_less_than_one_sample(estimator: str) -> None:
    """Batches shrink to what the budget still allows, so the last one cannot overshoot much."""
    game, _ = random_game(8, 3)
    res = estimate(game, estimator, stop=MaxEvaluations(1_000), seed=0)
    cost = {"permutation": 2 * 9, "truncated": 9, "kernel": 2, "banzhaf": 1}[estimator]
    assert 1_000 <= res.params["evaluations"] < 1_000 + cost
    assert res.status == "budget_exhausted"


def test_max_samples_counts_antithetic_pairs() -> None:
    game, _ = random_game(5, 0)
    res = estimate(game, "permutation", stop=MaxSamples(20), seed=0)
    assert res.params["samples"] == 20
    assert res.counts.tolist() == [2 * 2 * 20] * 5  # 2 utilities per marginal, 2 permutations per sample
    assert res.params["evaluations"] == 2 * 20 * 6


def test_max_seconds_stops_a_slow_game() -> None:
    def slow(masks: np.ndarray) -> np.ndarray:
        time.sleep(0.01)
        return masks.astype(float) ** 0.5

    game = Game([f"p{i}" for i in range(20)], slow)
    start = time.perf_counter()
    res = estimate(game, "permutation", stop=MaxSeconds(0.3) | MaxEvaluations(10**9), seed=0)
    assert time.perf_counter() - start < 2.0
    assert res.status == "budget_exhausted" and res.params["stopped_by"] == ["MaxSeconds(0.3)"]


def test_convergence_rule_in_a_composite_gives_converged() -> None:
    game, _ = glove_game(1, 2)
    res = estimate(game, "permutation", stop=RankStableFor(3) | MaxEvaluations(10**6), seed=0)
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
    first = estimate(game, estimator, stop=MaxEvaluations(2_000), seed=0)
    assert first.params["evaluations"] == game.requested
    assert 0 < game.computed <= min(first.params["evaluations"], 1 << 6)
    computed = game.computed
    again = estimate(game, estimator, stop=MaxEvaluations(2_000), seed=0)
    assert game.computed == computed  # memo hits are not computed again
    assert again.params["evaluations"] == first.params["evaluations"]  # ... but are requested
    np.testing.assert_array_equal(again.values, first.values)


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
    assert set(ESTIMATORS) == {"exact", "permutation", "truncated", "kernel", "banzhaf", "loo"}
    small, _ = additive_game(np.arange(16.0))
    res = estimate(small, seed=0)
    assert res.estimator == "exact" and res.params["auto"] is True
    big, phi = additive_game(np.arange(EXACT_MAX_PLAYERS + 1.0))
    res = estimate(big, seed=0)
    assert res.estimator == "permutation" and res.params["auto"] is True
    np.testing.assert_allclose(res.values, phi, atol=1e-9)
    assert estimate(additive_game([1.0, 2.0])[0], exact_max_players=1).estimator == "permutation"


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
    if estimator == "kernel":  # nothing to sample: the efficiency constraint alone gives φ
        assert res.params["samples"] == 0 and res.status == "converged"
    elif estimator in SAMPLING:
        assert res.params["samples"] >= 2
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
            truth = banzhaf_truth if estimator == "banzhaf" else phi
            assert np.all(np.abs(res.values - truth) <= 4 * res.stderr + 1e-9), (estimator, res.values, res.stderr)


@pytest.mark.parametrize("estimator", ["permutation", "truncated"])
def test_stderr_is_infinite_for_one_sample_then_finite_and_positive(estimator: str) -> None:
    """A sample variance needs two samples: inf with one, then finite and positive on a game whose
    marginals vary, and it covers the exact value."""
    game, table = random_game(5, 4)
    truth = exact_shapley(table, 5)
    one = estimate(game, estimator, stop=MaxSamples(1), seed=0)
    assert one.params["samples"] == 1 and np.all(np.isinf(one.stderr))
    for samples in (2, 3, 50):
        res = estimate(game, estimator, stop=MaxSamples(samples), seed=0)
        assert res.params["samples"] == samples
        assert np.all(np.isfinite(res.stderr)) and np.all(res.stderr > 0), (samples, res.stderr)
    res = estimate(game, estimator, stop=MaxSamples(400), seed=0)
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


def test_kernel_stderr_does_not_claim_certainty_from_too_few_pairs() -> None:
    game, table = random_game(5, 0)
    truth = exact_shapley(table, 5)
    for samples in (2, 3, 4):  # fewer pairs than players: the fit has no residual to measure
        res = estimate(game, "kernel", stop=MaxSamples(samples), seed=0, batch_size=1)
        error = np.abs(res.values - truth)
        assert error.max() > 0.5  # the estimate is poor ...
        assert np.all(error <= 4 * res.stderr), (samples, error, res.stderr)  # ... and its stderr must say so
    big, phi = glove_game(25, 35)
    res = estimate(big, "kernel", stop=MaxEvaluations(20_000) | StderrBelow(1e-3), seed=0, batch_size=32)
    assert res.status == "budget_exhausted" or np.abs(res.values - phi).max() < 0.05


def test_sampling_estimators_record_a_thinned_convergence_trace():
    from common.valuation.estimators import TRACE_MAX_POINTS, estimate, thin_trace
    from common.valuation.game import Game
    from common.valuation.stopping import MaxEvaluations

    game = Game.from_function([f"p{i}" for i in range(6)], lambda s: float(len(s)) ** 1.5)
    result = estimate(game, "permutation", stop=MaxEvaluations(3000), seed=1)
    trace = result.trace
    assert 1 < len(trace) <= TRACE_MAX_POINTS
    evaluations = [t["evaluations"] for t in trace]
    assert evaluations == sorted(evaluations) and evaluations[-1] == result.params["evaluations"]
    assert trace[-1]["values"] == {p: float(v) for p, v in zip(result.players, result.values)}
    assert estimate(Game.from_function(["a", "b"], len), "exact").trace == ()
    points = [{"evaluations": i} for i in range(1000)]
    thinned = thin_trace(points, 50)
    assert len(thinned) == 50 and thinned[0] is points[0] and thinned[-1] is points[-1]
