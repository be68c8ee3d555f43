"""Tests for common.valuation.composition (and the bit helpers it re-exports)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.valuation.bits import membership
from common.valuation.composition import (
    COMPOSITION_RULES,
    coalition_weights,
    compose_logprobs,
    mask_of,
    members_of,
    popcount,
    weight_matrix,
)

SIZES5 = [3, 1, 4, 1, 5]


def _rule_kwargs(rule: str, n: int) -> dict:
    return {"sizes": SIZES5[:n]} if rule == "size" else {}


def _random_logprobs(rng: np.random.Generator, n: int, shape: tuple[int, ...]):
    base = np.log(rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]))
    owners = np.log(rng.dirichlet(np.ones(shape[-1]), size=(n, *shape[:-1])))
    return base, owners


# --- bits -------------------------------------------------------------------


def test_popcount_matches_python_bit_count() -> None:
    masks = np.array([0, 1, 2, 3, 7, 1023, (1 << 62) - 1, 0b1010101], dtype=np.int64)
    assert popcount(masks).tolist() == [int(m).bit_count() for m in masks]
    rng = np.random.default_rng(0)
    big = rng.integers(0, 1 << 40, size=1000)
    assert popcount(big).tolist() == [int(m).bit_count() for m in big]


def test_popcount_rejects_negative_and_float() -> None:
    with pytest.raises(ValueError):
        popcount(np.array([-1]))
    with pytest.raises(ValueError):
        popcount(np.array([1.0]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, (1 << 62) - 1), max_size=40), st.integers(0, 62))
def test_membership_holds_each_players_bit(masks: list[int], n: int) -> None:
    """Row k, column i is bit i of mask k, for any number of players up to the limit."""
    matrix = membership(np.array(masks, dtype=np.int64), n)
    assert matrix.shape == (len(masks), n) and matrix.dtype == np.float64
    assert matrix.tolist() == [[float((m >> i) & 1) for i in range(n)] for m in masks]
    assert membership(np.array(masks, dtype=np.int64), n, bool).dtype == np.bool_


def test_mask_round_trip() -> None:
    for n in range(6):
        for mask in range(1 << n):
            assert mask_of(members_of(mask, n)) == mask
    assert mask_of([]) == 0
    assert mask_of([0, 2]) == 0b101
    assert members_of(0b1101, 4) == (0, 2, 3)


def test_mask_helpers_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="twice"):
        mask_of([1, 1])
    with pytest.raises(ValueError):
        mask_of([-1])
    with pytest.raises(ValueError):
        members_of(0b1000, 3)


# --- weights ----------------------------------------------------------------


@pytest.mark.parametrize("rule", COMPOSITION_RULES)
def test_empty_coalition_is_base_for_every_rule(rule: str) -> None:
    w, w0 = coalition_weights([], 5, rule, **_rule_kwargs(rule, 5))
    assert w.tolist() == [0.0] * 5
    assert w0 == 1.0


def test_weights_by_hand() -> None:
    w, w0 = coalition_weights([0, 2, 3], 5, "sum")
    assert w.tolist() == [1, 0, 1, 1, 0] and w0 == -2.0
    w, w0 = coalition_weights([0, 2, 3], 5, "mean")
    np.testing.assert_allclose(w, [1 / 3, 0, 1 / 3, 1 / 3, 0])
    assert w0 == 0.0
    w, w0 = coalition_weights([0, 2, 3], 5, "size", sizes=SIZES5)
    np.testing.assert_allclose(w, [3 / 8, 0, 4 / 8, 1 / 8, 0])
    assert w0 == 0.0


@pytest.mark.parametrize("rule", COMPOSITION_RULES)
def test_weight_matrix_equals_coalition_weights_for_all_masks(rule: str) -> None:
    n = 5
    kw = _rule_kwargs(rule, n)
    W, w0 = weight_matrix(np.arange(1 << n), n, rule, **kw)
    assert W.shape == (1 << n, n) and w0.shape == (1 << n,)
    assert W.dtype == np.float64 and w0.dtype == np.float64
    for mask in range(1 << n):
        w, b = coalition_weights(members_of(mask, n), n, rule, **kw)
        np.testing.assert_array_equal(W[mask], w)
        assert w0[mask] == b


@pytest.mark.parametrize("rule", COMPOSITION_RULES)
def test_weights_sum_to_one(rule: str) -> None:
    n = 5
    W, w0 = weight_matrix(np.arange(1 << n), n, rule, **_rule_kwargs(rule, n))
    np.testing.assert_allclose(W.sum(axis=1) + w0, 1.0, rtol=0, atol=1e-12)


def test_weight_errors() -> None:
    with pytest.raises(ValueError, match="sum, mean, size"):
        coalition_weights([0], 3, "median")
    with pytest.raises(ValueError, match="out of range"):
        coalition_weights([3], 3)
    with pytest.raises(ValueError, match="out of range"):
        coalition_weights([-1], 3)
    with pytest.raises(ValueError, match="sizes"):
        coalition_weights([0], 3, "size")
    with pytest.raises(ValueError, match="sizes"):
        coalition_weights([0], 3, "size", sizes=[1, 2])
    with pytest.raises(ValueError, match="positive"):
        coalition_weights([0], 3, "size", sizes=[1, 0, 2])
    with pytest.raises(ValueError):
        weight_matrix(np.array([8]), 3)
    with pytest.raises(ValueError):
        weight_matrix(np.array([-1]), 3)


# --- compose_logprobs -------------------------------------------------------


@pytest.mark.parametrize("rule", COMPOSITION_RULES)
def test_compose_empty_returns_base_exactly(rule: str) -> None:
    base, owners = _random_logprobs(np.random.default_rng(1), 4, (2, 3, 7))
    out = compose_logprobs(base, owners, [], rule, **_rule_kwargs(rule, 4))
    np.testing.assert_array_equal(out, base)
    assert out.dtype == np.float64


@pytest.mark.parametrize("rule", COMPOSITION_RULES)
def test_compose_single_owner_returns_owner_exactly(rule: str) -> None:
    base, owners = _random_logprobs(np.random.default_rng(2), 4, (3, 11))
    for i in range(4):
        out = compose_logprobs(base, owners, [i], rule, **_rule_kwargs(rule, 4))
        np.testing.assert_array_equal(out, owners[i])


def test_compose_single_owner_exact_from_float32() -> None:
    base, owners = _random_logprobs(np.random.default_rng(3), 3, (5, 9))
    base32, owners32 = base.astype(np.float32), owners.astype(np.float32)
    out = compose_logprobs(base32, owners32, [1])
    np.testing.assert_array_equal(out, owners32[1].astype(np.float64))


def test_sum_rule_matches_hand_formula() -> None:
    rng = np.random.default_rng(4)
    base, owners = _random_logprobs(rng, 5, (4, 6, 13))
    for members in [(0, 1), (1, 3, 4), (0, 1, 2, 3, 4)]:
        expected = sum(owners[i] for i in members) + (1 - len(members)) * base
        np.testing.assert_allclose(compose_logprobs(base, owners, members), expected, rtol=1e-12, atol=1e-12)


def test_mean_and_size_rules_match_hand_formula() -> None:
    rng = np.random.default_rng(5)
    base, owners = _random_logprobs(rng, 5, (3, 8))
    members = (0, 2, 3)
    mean = (owners[0] + owners[2] + owners[3]) / 3
    np.testing.assert_allclose(compose_logprobs(base, owners, members, "mean"), mean, rtol=1e-12)
    size = (3 * owners[0] + 4 * owners[2] + 1 * owners[3]) / 8
    got = compose_logprobs(base, owners, members, "size", sizes=SIZES5)
    np.testing.assert_allclose(got, size, rtol=1e-12)


def test_neg_inf_is_clamped_before_combining() -> None:
    base = np.array([-1.0, -np.inf, -2.0])
    owners = np.array([[-np.inf, -0.5, -1e6], [-0.2, -np.inf, -3.0]])
    out = compose_logprobs(base, owners, [0, 1], floor=-100.0)
    assert np.all(np.isfinite(out))
    # sum rule, |S| = 2: owner0 + owner1 - base, each clamped at -100
    np.testing.assert_allclose(out, [-100 - 0.2 + 1.0, -0.5 - 100 + 100, -100 - 3.0 + 2.0])


def test_non_members_are_not_read() -> None:
    base = np.array([-1.0, -2.0])
    owners = np.array([[-0.5, -0.5], [np.nan, np.nan]])
    np.testing.assert_array_equal(compose_logprobs(base, owners, [0]), owners[0])
    with pytest.raises(ValueError, match="nan"):
        compose_logprobs(base, owners, [0, 1])


def test_compose_shape_errors() -> None:
    base = np.zeros((2, 3))
    with pytest.raises(ValueError, match="shape"):
        compose_logprobs(base, np.zeros((2, 3, 2)), [0])
    with pytest.raises(ValueError, match="floor"):
        compose_logprobs(base, np.zeros((1, 2, 3)), [0], floor=-np.inf)


def test_all_subsets_of_sum_rule_are_consistent() -> None:
    """Σ over members computed by compose equals the hand formula for every subset of n=4."""
    base, owners = _random_logprobs(np.random.default_rng(6), 4, (5,))
    for k in range(5):
        for members in itertools.combinations(range(4), k):
            expected = owners[list(members)].sum(axis=0) + (1 - k) * base
            np.testing.assert_allclose(compose_logprobs(base, owners, members), expected, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 5),
    rule=st.sampled_from(COMPOSITION_RULES),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_common_shift_passes_through(n: int, rule: str, seed: int, data) -> None:
    """Weights sum to 1, so adding the same constant to every model's log-probs at a
    position shifts the coalition's log-probs by exactly that constant: per-prompt
    normalisers are common to all models and cancel inside a preference pair."""
    members = sorted(data.draw(st.sets(st.integers(0, n - 1))))
    rng = np.random.default_rng(seed)
    base, owners = _random_logprobs(rng, n, (3, 6))
    c = rng.normal(scale=5.0, size=(3, 1))
    kw = _rule_kwargs(rule, n)
    shifted = compose_logprobs(base + c, owners + c, members, rule, **kw)
    np.testing.assert_allclose(shifted, compose_logprobs(base, owners, members, rule, **kw) + c, atol=1e-9)
