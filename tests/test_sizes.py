"""Tests for common.valuation.sizes: the size allocation and the draws without replacement."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.valuation.bits import popcount
from common.valuation.sizes import DistinctDraws, allocate, masks_of_size, water_fill

cells = st.integers(1, 8)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), k=cells)
def test_water_fill_is_proportional_below_the_caps(data, k: int) -> None:
    weights = np.array(data.draw(st.lists(st.floats(0.01, 10.0), min_size=k, max_size=k)))
    capacity = np.array(data.draw(st.lists(st.integers(0, 50), min_size=k, max_size=k)), dtype=float)
    total = data.draw(st.floats(0.0, 400.0))
    out = water_fill(weights, capacity, total)
    assert np.all(out >= -1e-12) and np.all(out <= capacity + 1e-9)
    assert out.sum() == pytest.approx(min(total, capacity.sum()), abs=1e-6)
    below = (out < capacity - 1e-9) & (capacity > 0)
    if below.sum() >= 1:
        level = out[below] / weights[below]  # one water level wherever the cap does not bind ...
        np.testing.assert_allclose(level, level[0], rtol=1e-6, atol=1e-9)
        full = (out >= capacity - 1e-9) & (capacity > 0)
        assert np.all(capacity[full] / weights[full] <= level[0] + 1e-6)  # ... and capped cells sit below it


def test_water_fill_by_hand() -> None:
    # weights 1:1:2, total 8, the first cell holds only 1: it is full and the rest splits 1:2
    np.testing.assert_allclose(water_fill(np.array([1.0, 1, 2]), np.array([1.0, 10, 10]), 8), [1, 7 / 3, 14 / 3])
    # more than everything: every cell full, including a zero-weight one
    np.testing.assert_allclose(water_fill(np.array([1.0, 0.0]), np.array([3.0, 4.0]), 100), [3, 4])


@settings(max_examples=200, deadline=None)
@given(targets=st.lists(st.floats(0.0, 30.0), min_size=1, max_size=8), k=st.integers(0, 100))
def test_allocate_respects_k_and_every_target(targets: list[float], k: int) -> None:
    t = np.array(targets)
    out = allocate(t, k)
    assert out.dtype.kind == "i" and np.all(out >= 0)
    assert out.sum() == min(k, math.floor(t.sum() + 1e-9))
    assert np.all(out <= np.ceil(t - 1e-9))


@pytest.mark.parametrize(("n", "k"), [(5, 0), (5, 2), (8, 4), (12, 6), (18, 9)])
def test_masks_of_size_lists_every_coalition_of_a_size_once(n: int, k: int) -> None:
    masks = masks_of_size(n, k)
    reference = sorted(sum(1 << i for i in c) for c in itertools.combinations(range(n), k))
    assert masks.tolist() == reference  # both listing routes (n = 18, k = 9 filters 2ⁿ masks)
    holding = masks_of_size(n, k, with_player=0)
    assert holding.tolist() == [m for m in reference if m & 1]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), seed=st.integers(0, 2**31), data=st.data())
def test_distinct_draws_never_repeat_and_run_out_exactly(n: int, seed: int, data) -> None:
    size = data.draw(st.integers(1, n - 1))
    canonical = 2 * size == n and data.draw(st.booleans())
    draws = DistinctDraws(n, np.random.default_rng(seed))
    population = math.comb(n, size) // (2 if canonical else 1)
    assert draws.population(size, canonical) == population
    seen: list[int] = []
    while len(seen) < population:
        chunk = draws.draw(size, data.draw(st.integers(1, 7)), canonical)
        assert chunk.size >= 1
        seen.extend(chunk.tolist())
        assert draws.drawn(size, canonical) == len(seen)
    assert len(seen) == len(set(seen)) == population
    assert np.all(popcount(np.array(seen, dtype=np.int64)) == size)
    if canonical:  # one representative per complementary pair: the one holding player 0
        assert all(m & 1 for m in seen)
    assert draws.draw(size, 3, canonical).size == 0  # nothing left


def test_distinct_draws_are_uniform() -> None:
    """Each of the C(6, 3) = 20 coalitions is equally likely to be among 5 drawn (chi-square)."""
    hits = np.zeros(1 << 6)
    for seed in range(2_000):
        hits[DistinctDraws(6, np.random.default_rng(seed)).draw(3, 5)] += 1
    observed = hits[masks_of_size(6, 3)]
    expected = 2_000 * 5 / 20
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 43.8  # the 0.999 quantile of chi-square with 19 degrees of freedom


def test_distinct_draws_by_rejection_on_a_big_size() -> None:
    """n = 50, size 25: far too many to list; rejection still gives distinct coalitions of the size."""
    draws = DistinctDraws(50, np.random.default_rng(0))
    first, second = draws.draw(25, 500), draws.draw(25, 500, canonical=False)
    both = np.concatenate([first, second])
    assert np.unique(both).size == 1_000 and np.all(popcount(both) == 25)
    paired = draws.draw(25, 300, canonical=True)
    assert np.all(paired & 1) and np.unique(paired).size == 300
