"""Tests for common.valuation.utility (the preference utility of method.md §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.valuation.bits import members_of
from common.valuation.composition import COMPOSITION_RULES, coalition_weights, compose_logprobs
from common.valuation.utility import (
    UTILITY_METRICS,
    accuracy,
    all_masks,
    coalition_margins,
    coalition_utilities,
    mean_logsigmoid,
    preference_margins,
)

# Hand-made example: 2 owners, 3 held-out pairs.
BASE_W = np.array([-10.0, -5.0, -7.0])
BASE_L = np.array([-12.0, -6.0, -7.0])
OWN_W = np.array([[-9.0, -5.0, -8.0], [-10.0, -4.0, -7.0]])
OWN_L = np.array([[-12.0, -7.0, -7.0], [-11.0, -6.0, -6.0]])
M_HAND = np.array([[1.0, 1.0, -1.0], [-1.0, 1.0, -1.0]])


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_preference_margins_by_hand() -> None:
    np.testing.assert_array_equal(preference_margins(BASE_W, BASE_L, OWN_W, OWN_L), M_HAND)


def test_preference_margins_shape_errors() -> None:
    with pytest.raises(ValueError, match="base_rejected"):
        preference_margins(BASE_W, BASE_L[:2], OWN_W, OWN_L)
    with pytest.raises(ValueError, match="owner_chosen"):
        preference_margins(BASE_W, BASE_L, OWN_W[:, :2], OWN_L)
    with pytest.raises(ValueError, match="owner_rejected"):
        preference_margins(BASE_W, BASE_L, OWN_W, OWN_L[:1])
    with pytest.raises(ValueError, match="base_chosen"):
        preference_margins(np.zeros(0), np.zeros(0), np.zeros((2, 0)), np.zeros((2, 0)))
    with pytest.raises(ValueError, match="non-finite"):
        preference_margins(BASE_W, BASE_L, OWN_W, np.where(OWN_L == -6.0, -np.inf, OWN_L))


def test_hand_example_accuracy_and_logsigmoid() -> None:
    masks = all_masks(2)
    acc = coalition_utilities(M_HAND, masks, "accuracy")
    np.testing.assert_allclose(acc, [0.5, 2 / 3, 1 / 3, 0.5])
    # mean rule: {0,1} has margins [0, 1, -1] -> (0.5 + 1 + 0) / 3
    acc_mean = coalition_utilities(M_HAND, masks, "accuracy", rule="mean")
    np.testing.assert_allclose(acc_mean, [0.5, 2 / 3, 1 / 3, 0.5])
    ls = coalition_utilities(M_HAND, masks, "logsigmoid", beta=1.0)
    expected = [
        math.log(0.5),
        (2 * _log_sigmoid(1) + _log_sigmoid(-1)) / 3,
        (_log_sigmoid(-1) + _log_sigmoid(1) + _log_sigmoid(-1)) / 3,
        (_log_sigmoid(0) + _log_sigmoid(2) + _log_sigmoid(-2)) / 3,
    ]
    np.testing.assert_allclose(ls, expected, rtol=1e-12)


@pytest.mark.parametrize("rule", COMPOSITION_RULES)
def test_empty_coalition_accuracy_is_exactly_half(rule: str) -> None:
    M = np.random.default_rng(0).normal(size=(4, 17))
    sizes = [1, 2, 3, 4] if rule == "size" else None
    v = coalition_utilities(M, np.array([0]), "accuracy", rule=rule, sizes=sizes)
    assert v[0] == 0.5
    assert accuracy(np.zeros(9)) == 0.5


def test_accuracy_counts_ties_half() -> None:
    assert accuracy(np.array([1.0, -1.0, 0.0, 2.0])) == pytest.approx(2.5 / 4)
    np.testing.assert_allclose(accuracy(np.array([[1.0, 1.0], [-1.0, 0.0]])), [1.0, 0.25])


def test_mean_logsigmoid_is_stable_for_extreme_margins() -> None:
    v = mean_logsigmoid(np.array([-1e6, 1e6]), beta=1.0)
    assert np.isfinite(v)
    assert v == pytest.approx(-1e6 / 2)
    assert mean_logsigmoid(np.array([1e6]), beta=1.0) == 0.0
    with pytest.raises(ValueError, match="beta"):
        mean_logsigmoid(np.array([1.0]), beta=0.0)


def test_margins_agree_with_composed_logprobs() -> None:
    """m_S from W @ M equals the margin of the coalition model built by compose_logprobs."""
    rng = np.random.default_rng(1)
    n, P = 4, 10
    bw, bl = rng.normal(-20, 3, P), rng.normal(-20, 3, P)
    ow, ol = rng.normal(-20, 3, (n, P)), rng.normal(-20, 3, (n, P))
    M = preference_margins(bw, bl, ow, ol)
    for rule, sizes in (("sum", None), ("mean", None), ("size", [5, 1, 2, 8])):
        got = coalition_margins(M, all_masks(n), rule, sizes)
        for mask in range(1 << n):
            members = members_of(mask, n)
            cw = compose_logprobs(bw, ow, members, rule, sizes)
            cl = compose_logprobs(bl, ol, members, rule, sizes)
            np.testing.assert_allclose(got[mask], (cw - bw) - (cl - bl), atol=1e-9)


@pytest.mark.parametrize("metric", UTILITY_METRICS)
@pytest.mark.parametrize("rule", COMPOSITION_RULES)
def test_vectorised_equals_scalar_loop(metric: str, rule: str) -> None:
    rng = np.random.default_rng(2)
    n, P, beta = 6, 25, 0.3
    M = rng.normal(size=(n, P))
    sizes = list(rng.integers(1, 50, size=n)) if rule == "size" else None
    got = coalition_utilities(M, all_masks(n), metric, rule, sizes, beta=beta)
    expected = []
    for mask in range(1 << n):
        w, _ = coalition_weights(members_of(mask, n), n, rule, sizes)
        m = [sum(w[owner] * M[owner, p] for owner in range(n)) for p in range(P)]
        if metric == "accuracy":
            expected.append(sum(1.0 if x > 0 else 0.5 if x == 0 else 0.0 for x in m) / P)
        else:
            expected.append(sum(_log_sigmoid(beta * x) for x in m) / P)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("metric", UTILITY_METRICS)
@pytest.mark.parametrize("rule", COMPOSITION_RULES)
def test_chunking_gives_identical_results(metric: str, rule: str) -> None:
    rng = np.random.default_rng(3)
    n = 6
    M = rng.normal(size=(n, 40))
    sizes = [3, 1, 4, 1, 5, 9] if rule == "size" else None
    masks = rng.permutation(all_masks(n))
    results = [coalition_utilities(M, masks, metric, rule, sizes, chunk_size=c) for c in (1, 7, 4096)]
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_coalition_utilities_errors() -> None:
    M = np.zeros((2, 3))
    with pytest.raises(ValueError, match="accuracy, logsigmoid"):
        coalition_utilities(M, all_masks(2), "auc")
    with pytest.raises(ValueError, match="chunk_size"):
        coalition_utilities(M, all_masks(2), chunk_size=0)
    with pytest.raises(ValueError):
        coalition_utilities(M, np.array([4]))
    with pytest.raises(ValueError, match="shape"):
        coalition_utilities(np.zeros(3), all_masks(2))


def test_all_masks() -> None:
    np.testing.assert_array_equal(all_masks(3), np.arange(8))
    assert all_masks(0).tolist() == [0]
    with pytest.raises(ValueError):
        all_masks(-1)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 5),
    P=st.integers(1, 12),
    exponent=st.integers(-20, 20),
    rule=st.sampled_from(COMPOSITION_RULES),
    seed=st.integers(0, 2**32 - 1),
)
def test_scaling_log_ratios_keeps_accuracy(n: int, P: int, exponent: int, rule: str, seed: int) -> None:
    """Accuracy depends only on margin signs and every rule is linear in the log-ratios
    log π_l − log π₀, so scaling all owners' log-ratios by the same c > 0 scales every
    coalition margin by c and leaves every coalition's accuracy unchanged.  Integer-valued
    margins make ties common, and power-of-two factors commute with rounding, so the check
    can be exact: ties must stay ties."""
    rng = np.random.default_rng(seed)
    M = rng.integers(-3, 4, size=(n, P)).astype(np.float64)
    masks = all_masks(n)
    sizes = list(rng.integers(1, 10, size=n)) if rule == "size" else None
    scale = 2.0**exponent
    np.testing.assert_array_equal(
        coalition_utilities(M, masks, "accuracy", rule, sizes),
        coalition_utilities(M * scale, masks, "accuracy", rule, sizes),
    )


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), P=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_per_pair_shift_cancels(n: int, P: int, seed: int) -> None:
    """A constant added to one side of a pair for *every* model (base included) —
    e.g. a prompt-dependent normaliser — cancels from the margins."""
    rng = np.random.default_rng(seed)
    bw, bl = rng.normal(-10, 2, P), rng.normal(-10, 2, P)
    ow, ol = rng.normal(-10, 2, (n, P)), rng.normal(-10, 2, (n, P))
    cw, cl = rng.normal(0, 5, P), rng.normal(0, 5, P)
    np.testing.assert_allclose(
        preference_margins(bw + cw, bl + cl, ow + cw, ol + cl),
        preference_margins(bw, bl, ow, ol),
        atol=1e-9,
    )


@pytest.mark.parametrize("bad", [-1, 63, 2.0, True, "3", None])
def test_every_player_count_check_is_the_same_one(bad):
    """Issue 13: the player-count check lived in bits, utility and shapley with diverging rules."""
    from common.valuation.bits import check_masks, check_players
    from common.valuation.shapley import exact_shapley
    from common.valuation.utility import all_masks

    messages = set()
    for call in (lambda: check_players(bad), lambda: all_masks(bad), lambda: exact_shapley(np.zeros(1), bad),
                 lambda: check_masks(np.zeros(1, dtype=np.int64), bad)):
        with pytest.raises(ValueError) as caught:
            call()
        messages.add(str(caught.value))
    assert messages == {f"number of players must be an int in 0..62, got {bad!r}"}
