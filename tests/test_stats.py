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


def test_matches_scipy_style_definitions_on_random_data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 30).astype(float)
    y = x + rng.integers(-2, 3, 30)
    tau = kendall_tau(x, y)
    assert -1 <= tau <= 1 and tau > 0.3
    assert spearman(x, y) == pytest.approx(pearson(ranks(x), ranks(y)))
