"""Semivalues as first-class values: Beta Shapley beside Shapley, Banzhaf and leave-one-out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config.games import ValuationSettings
from common.config.job import OwnerEntry, ValuationJob
from common.errors import ConfigError
from common.valuation.estimators import estimate
from common.valuation.game import Game
from common.valuation.shapley import beta_size_weights, exact_banzhaf, exact_semivalue, exact_shapley
from common.valuation.stopping import MaxEvaluations


def _brute(table: np.ndarray, n: int, q: np.ndarray) -> np.ndarray:
    return np.array([sum(q[bin(m).count("1")] / math.comb(n - 1, bin(m).count("1")) * (table[m | 1 << i] - table[m])
                         for m in range(1 << n) if not m >> i & 1) for i in range(n)])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.integers(0, 10_000), st.floats(0.2, 20), st.floats(0.2, 20))
def test_beta_shapley_is_the_semivalue_sum_over_coalitions(n: int, seed: int, alpha: float, beta: float) -> None:
    table = np.random.default_rng(seed).normal(size=1 << n)
    q = beta_size_weights(n, alpha, beta)
    assert q.sum() == pytest.approx(1.0) and np.all(q >= 0)
    assert exact_semivalue(table, n, q) == pytest.approx(_brute(table, n, q), abs=1e-10)
    assert exact_shapley(table, n) == pytest.approx(_brute(table, n, np.full(n, 1 / n)), abs=1e-10)
    assert exact_banzhaf(table, n) == pytest.approx(
        [np.mean([table[m | 1 << i] - table[m] for m in range(1 << n) if not m >> i & 1]) for i in range(n)])


def test_beta_one_one_is_shapley_and_sixteen_one_favours_small_coalitions() -> None:
    assert beta_size_weights(6, 1, 1) == pytest.approx(np.full(6, 1 / 6))
    q = beta_size_weights(6, 16, 1)
    assert np.all(np.diff(q) < 0) and q[0] > 0.6
    with pytest.raises(ValueError, match="alpha > 0"):
        beta_size_weights(3, 0, 1)


def _game(n: int = 10) -> tuple[Game, np.ndarray]:
    w = np.random.default_rng(3).normal(size=n)
    table = np.tanh(((np.arange(1 << n)[:, None] >> np.arange(n)) & 1) @ w)
    return Game.from_table([f"p{i}" for i in range(n)], table), table


def test_the_beta_estimator_enumerates_when_it_can_and_is_exact() -> None:
    game, table = _game()
    result = estimate(game, "beta", stop=MaxEvaluations(1 << 10), alpha=4, beta=2)
    assert result.kind == "beta" and result.params["enumerated"] and not result.stderr.any()
    assert result.values == pytest.approx(exact_semivalue(table, 10, beta_size_weights(10, 4, 2)))
    shapley = estimate(game, "beta", stop=MaxEvaluations(1 << 10), alpha=1, beta=1)
    assert shapley.values == pytest.approx(exact_shapley(table, 10))


def test_sampled_beta_values_have_calibrated_standard_errors() -> None:
    game, table = _game()
    exact = exact_semivalue(table, 10, beta_size_weights(10, 16, 1))
    z = []
    for seed in range(30):
        result = estimate(game, "beta", stop=MaxEvaluations(300), seed=seed)
        assert result.status == "budget_exhausted" and result.params["evaluations"] <= 300
        z.append((result.values - exact) / result.stderr)
    coverage = float((np.abs(np.array(z)) <= 2).mean())
    assert 0.88 <= coverage <= 0.995, coverage
    assert np.abs(np.mean(z)) < 0.5  # no bias worth a stderr


def test_beta_values_through_the_pipeline_are_labelled_and_normalised(fast_spec, default_market, quick_adapters,
                                                                      tmp_path) -> None:
    from server.report.markdown import render_markdown
    from server.report.schema import payout_game, value_kind
    from server.valuation.pipeline import Submission, value_submissions

    names = ["clean", "clean-small", "flipped"]
    settings_ = ValuationSettings(estimator="beta")
    job = ValuationJob(run_id="b", owners=tuple(OwnerEntry(n) for n in names), eval_path=str(default_market.eval_path),
                       out_dir=str(tmp_path), spec=fast_spec, valuation=settings_)
    report = value_submissions(job, [Submission(n, tensors=quick_adapters[n].tensors,
                                                num_examples=quick_adapters[n].num_examples) for n in names])
    (game,) = report["games"]
    assert game["kind"] == "beta" and game["params"]["alpha"] == 16.0 and game["estimator"] == "beta"
    assert value_kind(payout_game(report)) == "Beta(16,1) Shapley value"
    assert "not efficient" in report["payout"]["policy_description"]
    assert "Beta(16,1) Shapley value" in render_markdown(report)
    assert sum(report["payout"]["shares"].values()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="beta values are not Shapley values"):
        ValuationJob(run_id="b", owners=job.owners, eval_path=job.eval_path, out_dir=str(tmp_path), spec=fast_spec,
                     valuation=settings_, payout_policy="positive")
    with pytest.raises(ConfigError, match="beta_alpha"):
        ValuationSettings(estimator="beta", beta_alpha=0.0)
