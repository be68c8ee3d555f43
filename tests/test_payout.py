"""Tests for common.valuation.payout."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.valuation.payout import PAYOUT_POLICIES, Payout, payout_shares


def test_positive_policy_proportional_shares() -> None:
    p = payout_shares({"a": 3.0, "b": 1.0, "c": 0.0}, budget=100.0)
    assert isinstance(p, Payout)
    assert p.policy == "positive" and p.budget == 100.0
    assert p.shares == pytest.approx({"a": 0.75, "b": 0.25, "c": 0.0})
    assert p.amounts == pytest.approx({"a": 75.0, "b": 25.0, "c": 0.0})
    assert math.fsum(p.shares.values()) == pytest.approx(1.0)
    assert p.flagged == ()
    assert "positive" in p.description


def test_positive_policy_zeroes_and_flags_negatives() -> None:
    p = payout_shares({"a": 0.2, "bad": -0.5, "b": 0.6, "worse": -0.1}, budget=10.0)
    assert p.shares["bad"] == 0.0 and p.shares["worse"] == 0.0
    assert p.amounts["bad"] == 0.0
    assert p.shares["a"] == pytest.approx(0.25) and p.shares["b"] == pytest.approx(0.75)
    assert math.fsum(p.shares.values()) == pytest.approx(1.0)
    assert p.flagged == ("bad", "worse")
    assert "bad" in p.description and "worse" in p.description


def test_all_negative_pays_nothing_under_positive_policy() -> None:
    p = payout_shares({"a": -1.0, "b": -2.0}, budget=5.0)
    assert p.shares == {"a": 0.0, "b": 0.0}
    assert p.amounts == {"a": 0.0, "b": 0.0}
    assert p.flagged == ("a", "b")
    assert "no owner has a positive" in p.description.lower()


def test_all_negative_under_signed_policy_warns() -> None:
    """Σφ < 0: the signed shares are positive and sum to 1, but they reward the most
    harmful owner most — the description must say so."""
    p = payout_shares({"a": -1.0, "b": -3.0}, budget=4.0, policy="signed")
    assert p.shares == pytest.approx({"a": 0.25, "b": 0.75})
    assert p.flagged == ("a", "b")
    assert "WARNING" in p.description and "negative" in p.description


def test_signed_policy() -> None:
    p = payout_shares({"a": 3.0, "b": -1.0}, budget=10.0, policy="signed")
    assert p.shares == pytest.approx({"a": 1.5, "b": -0.5})
    assert p.amounts == pytest.approx({"a": 15.0, "b": -5.0})
    assert math.fsum(p.shares.values()) == pytest.approx(1.0)
    assert p.flagged == ("b",)
    assert "signed" in p.description and "WARNING" in p.description


def test_signed_policy_all_positive_has_no_warning() -> None:
    p = payout_shares({"a": 1.0, "b": 3.0}, policy="signed")
    assert p.shares == pytest.approx({"a": 0.25, "b": 0.75})
    assert "WARNING" not in p.description


def test_signed_policy_negative_total_warns() -> None:
    p = payout_shares({"a": 1.0, "b": -3.0}, policy="signed")
    assert p.shares == pytest.approx({"a": -0.5, "b": 1.5})
    assert "negative" in p.description and "WARNING" in p.description


def test_signed_policy_zero_sum_pays_nothing() -> None:
    for values in ({"a": 1.0, "b": -1.0}, {"a": 0.0, "b": 0.0}, {"a": 0.1, "b": 0.2, "c": -0.3}):
        p = payout_shares(values, budget=7.0, policy="signed")
        assert set(p.shares.values()) == {0.0}
        assert set(p.amounts.values()) == {0.0}
        assert "sum to zero" in p.description


@pytest.mark.parametrize("budget", [-1.0, math.inf, math.nan])
def test_bad_budget(budget: float) -> None:
    with pytest.raises(ValueError, match="budget"):
        payout_shares({"a": 1.0}, budget=budget)


def test_bad_policy_and_values() -> None:
    with pytest.raises(ValueError, match="positive, signed"):
        payout_shares({"a": 1.0}, policy="equal")
    with pytest.raises(ValueError, match="finite"):
        payout_shares({"a": math.nan})


def test_zero_budget_and_frozen() -> None:
    p = payout_shares({"a": 1.0, "b": 1.0}, budget=0.0)
    assert p.shares == {"a": 0.5, "b": 0.5} and p.amounts == {"a": 0.0, "b": 0.0}
    with pytest.raises(AttributeError):
        p.budget = 2.0  # type: ignore[misc]


@settings(max_examples=60, deadline=None)
@given(
    values=st.dictionaries(
        st.text(min_size=1, max_size=4), st.floats(-10, 10, allow_nan=False), min_size=1, max_size=8
    ),
    budget=st.floats(0, 1e6),
    policy=st.sampled_from(PAYOUT_POLICIES),
)
def test_payout_invariants(values: dict[str, float], budget: float, policy: str) -> None:
    p = payout_shares(values, budget=budget, policy=policy)
    assert list(p.shares) == list(values) == list(p.amounts)
    assert p.flagged == tuple(k for k, v in values.items() if v < 0)
    total = math.fsum(p.shares.values())
    # Signed shares can be huge when values nearly cancel; each carries one rounding.
    tol = 1e-9 + 1e-12 * math.fsum(abs(s) for s in p.shares.values())
    assert abs(total - 1.0) <= tol or all(s == 0.0 for s in p.shares.values())
    for k in values:
        assert p.amounts[k] == pytest.approx(p.shares[k] * budget)
    if policy == "positive":
        assert all(0.0 <= s <= 1.0 for s in p.shares.values())
        if any(v > 0 for v in values.values()):
            assert total == pytest.approx(1.0)
            # ranking is preserved among paid owners
            paid = sorted(values, key=values.__getitem__)
            assert [p.shares[k] for k in paid] == sorted(p.shares[k] for k in paid)


def test_a_non_efficient_kind_is_not_paid_as_shapley_shares():
    """Issue 13: Banzhaf values were written under 'shapley' and paid out like Shapley values."""
    from common.valuation.payout import check_payable

    values = {"a": 0.3, "b": 0.1, "c": -0.05}
    for kind in ("banzhaf", "beta", "loo"):
        for policy in ("positive", "signed"):
            with pytest.raises(ValueError, match=f"^{kind} values are not Shapley values"):
                payout_shares(values, 10.0, policy, kind)
        paid = payout_shares(values, 10.0, "normalised", kind)
        assert paid.kind == kind and paid.shares == pytest.approx({"a": 0.75, "b": 0.25, "c": 0.0})
        assert "not efficient" in paid.description and paid.flagged == ("c",)
        robust = payout_shares(values, 10.0, "robust", kind)  # the default normalises too, and says so
        assert robust.shares == paid.shares and "not efficient" in robust.description
    check_payable("shapley", "signed")
    shapley = payout_shares(values, 10.0, "normalised", "shapley")
    assert shapley.shares == payout_shares(values, 10.0, "positive").shares and "not efficient" not in shapley.description
    with pytest.raises(ValueError):
        payout_shares(values, 1.0, "positive", "owen")  # not a kind


def test_estimators_state_their_kind():
    from common.valuation.estimators import ESTIMATOR_KINDS, estimate
    from common.valuation.game import Game

    game = Game.from_table(["a", "b"], [0.0, 1.0, 1.0, 3.0])
    for name, kind in ESTIMATOR_KINDS.items():
        assert estimate(game, name, seed=1).kind == kind
        assert str(kind) in ("shapley", "asymmetric", "banzhaf", "beta", "loo")
    assert estimate(game).as_dict()["a"]["value"] == pytest.approx(1.5)
