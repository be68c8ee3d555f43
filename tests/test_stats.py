"""Agreement statistics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.valuation.stats import kendall_tau, pearson, ranks, spearman


def test_ranks_average_ties():
    assert list(ranks([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]


def test_hand_made_case():
    x, y = [1, 2, 3, 4], [1, 3, 2, 4]
    # Pearson: dx = [-1.5,-.5,.5,1.5], dy = [-1.5,.5,-.5,1.5]; Σdxdy = 2.25-.25-.25+2.25 = 4; Σdx² = Σdy² = 5.
    assert pearson(x, y) == pytest.approx(0.8)
    assert spearman(x, y) == pytest.approx(0.8)
    # Pairs: 6, one discordant (2,3): τ = (5 - 1) / 6.
    assert kendall_tau(x, y) == pytest.approx(4 / 6)


def test_extremes_and_constants():
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [10, 100, 1000]) == pytest.approx(1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        pearson([1], [1])


def test_spearman_without_ties_is_the_classic_formula():
    """With distinct values ρ = 1 − 6Σd²/(n(n²−1)), d the rank differences (worked by hand)."""
    x = [0.1, 3.0, 7.0, 100.0, 1e3]
    y = [-5.0, -9.0, 2.0, 0.0, 40.0]  # ranks 2, 1, 4, 3, 5
    assert list(ranks(y)) == [2.0, 1.0, 4.0, 3.0, 5.0]
    # d = (1-2, 2-1, 3-4, 4-3, 5-5) = (-1, 1, -1, 1, 0): Σd² = 4, ρ = 1 - 6·4/(5·24) = 0.8
    assert spearman(x, y) == pytest.approx(0.8, abs=1e-12)
    assert pearson(x, y) != pytest.approx(0.8, abs=0.05), "ρ depends on ranks only, unlike r"
    # monotone transforms of either side leave ρ unchanged
    assert spearman(np.log(x), np.exp(np.asarray(y) / 10)) == pytest.approx(0.8, abs=1e-12)
    # pairs: 10, discordant (1,2) and (3,4): τ = (8 - 2) / 10
    assert kendall_tau(x, y) == pytest.approx(0.6, abs=1e-12)


def test_spearman_and_kendall_with_ties_worked_by_hand():
    # One tie in x. Ranks: x → (1, 2.5, 2.5, 4), y → (1, 3, 2, 4); both means 2.5.
    # dx = (-1.5, 0, 0, 1.5), dy = (-1.5, .5, -.5, 1.5): Σdxdy = 4.5, Σdx² = 4.5, Σdy² = 5
    # ρ = 4.5 / √(4.5·5) = √0.9.
    x, y = [1, 2, 2, 3], [1, 3, 2, 4]
    assert spearman(x, y) == pytest.approx(math.sqrt(0.9), abs=1e-12)
    # the no-ties formula would give 1 - 6·0.5/60 = 0.95: the tie correction matters
    assert spearman(x, y) != pytest.approx(0.95, abs=1e-3)
    # τ-b: 6 pairs, 5 concordant, 0 discordant, 1 tied in x only: 5 / √((6-1)(6-0))
    assert kendall_tau(x, y) == pytest.approx(5 / math.sqrt(30), abs=1e-12)

    # A tie on each side and one discordant pair. x → (1.5, 1.5, 3, 4), y = (2, 1, 1, 3) → (3, 1.5, 1.5, 4).
    # dx = (-1, -1, .5, 1.5), dy = (.5, -1, -1, 1.5): Σdxdy = 2.25, Σdx² = Σdy² = 4.5: ρ = 0.5
    x, y = [1, 1, 2, 3], [2, 1, 1, 3]
    assert list(ranks(y)) == [3.0, 1.5, 1.5, 4.0]
    assert spearman(x, y) == pytest.approx(0.5, abs=1e-12)
    # pairs (0,2) discordant, (0,1) tied in x, (1,2) tied in y, 3 concordant: (3-1) / √(5·5)
    assert kendall_tau(x, y) == pytest.approx(0.4, abs=1e-12)


def _ranks_by_counting(values):
    """Average ranks by definition: 1 + #smaller + (#equal - 1)/2 (no sorting)."""
    return [1 + sum(v < u for v in values) + (sum(v == u for v in values) - 1) / 2 for u in values]


def _kendall_tau_b_by_pairs(x, y):
    """τ-b = (n_c − n_d) / √((n₀ − n₁)(n₀ − n₂)), counting every pair in plain Python."""
    concordant = discordant = tied_x = tied_y = pairs = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            pairs += 1
            a, b = (x[i] > x[j]) - (x[i] < x[j]), (y[i] > y[j]) - (y[i] < y[j])
            tied_x += a == 0
            tied_y += b == 0
            concordant += a * b > 0
            discordant += a * b < 0
    return (concordant - discordant) / math.sqrt((pairs - tied_x) * (pairs - tied_y))


def test_agrees_with_an_independent_plain_python_computation_on_tied_random_data():
    import statistics

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 40))
        x = rng.integers(0, 5, n).astype(float).tolist()  # many ties
        y = (np.asarray(x) + rng.integers(-2, 3, n)).tolist()
        if len(set(x)) < 2 or len(set(y)) < 2:
            continue
        expected_rho = statistics.correlation(_ranks_by_counting(x), _ranks_by_counting(y))
        assert spearman(x, y) == pytest.approx(expected_rho, abs=1e-12), trial
        assert kendall_tau(x, y) == pytest.approx(_kendall_tau_b_by_pairs(x, y), abs=1e-12), trial
        assert pearson(x, y) == pytest.approx(statistics.correlation(x, y), abs=1e-12), trial


def test_agrees_with_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, 30).astype(float)
    y = x + rng.integers(-2, 3, 30)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y, variant="b").statistic, abs=1e-12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
