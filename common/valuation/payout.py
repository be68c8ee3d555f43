"""Turning Shapley values into shares of a budget (method.md §4).

Shapley values can be negative — that owner's data pushes the model the wrong
way for the utility — so "pay in proportion to value" is not well defined on
its own.  Two policies are offered and every :class:`Payout` carries a
one-sentence description of the policy applied, so a report never shows
amounts without saying how they were derived.

``robust`` (the default) is ``positive`` made replication-robust: owners whose held-out
behaviour is near-identical are paid as one source (:mod:`common.valuation.replicas`), so a
copy, a near-copy or a split of one owner's data never pays more than the data would alone.
The caller passes the values of the quotient game split among each group's members and the
groups themselves; here they are only divided and described.

A payout also states which *kind* of values it pays from (:class:`ValueKind`). ``positive``
and ``signed`` divide the gain ``v(N) − v(∅)`` and so need an efficient kind (Shapley); values
of another kind (Banzhaf, leave-one-out) are refused unless the ``normalised`` policy says
how they are paid: in proportion to their positive part, described as such.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.valuation.shapley import EFFICIENT_KINDS, ValueKind

__all__ = ["PAYOUT_POLICIES", "Payout", "check_payable", "payout_shares"]

#: ``positive``: shares proportional to ``max(φ, 0)``; negative-value owners
#: get nothing and are flagged.  ``signed``: shares ``φ_i / Σ φ``, which can be
#: negative (an owner that would owe) when some values are negative.
#: ``normalised``: shares proportional to ``max(v, 0)`` for values of any kind,
#: the one policy that pays from a non-efficient kind (Banzhaf, leave-one-out).
#: ``robust``: ``positive`` over replica groups, each paid as one source; any kind.
PAYOUT_POLICIES: tuple[str, ...] = ("robust", "positive", "signed", "normalised")

ANY_KIND_POLICIES: frozenset[str] = frozenset({"normalised", "robust"})

#: A signed total this small relative to ``Σ|φ|`` is treated as zero: dividing
#: by floating-point residue would produce meaningless shares of ±10¹⁵.
_SIGNED_ZERO_RTOL = 1e-12


@dataclass(frozen=True)
class Payout:
    """How a budget is divided among owners under one policy.

    Attributes:
        policy: one of :data:`PAYOUT_POLICIES`.
        budget: total amount to distribute (finite, ≥ 0).
        shares: fraction of the budget per owner; sums to 1 whenever the
            policy pays anything out, otherwise all zeros.
        amounts: ``share · budget`` per owner.
        flagged: owners whose value is negative, in input order — reported
            under both policies because a negative value is a finding in itself.
        description: one sentence stating the policy and its outcome, for reports.
        kind: the kind of values paid from.
        replicas: under ``robust``, the groups of two or more owners paid as one source.
    """

    policy: str
    budget: float
    shares: dict[str, float]
    amounts: dict[str, float]
    flagged: tuple[str, ...]
    description: str
    kind: ValueKind = ValueKind.SHAPLEY
    replicas: tuple[tuple[str, ...], ...] = ()


def check_payable(kind: str, policy: str) -> None:
    """``ValueError`` unless values of ``kind`` may be paid out under ``policy``."""
    if policy not in PAYOUT_POLICIES:
        raise ValueError(f"unknown payout policy {policy!r}; valid policies: {', '.join(PAYOUT_POLICIES)}")
    value_kind = ValueKind(kind)
    if value_kind not in EFFICIENT_KINDS and policy not in ANY_KIND_POLICIES:
        raise ValueError(f"{value_kind.value} values are not Shapley values (they do not sum to v(N) − v(∅)), "
                         f"so the {policy!r} policy cannot pay them as shares of the gain; choose the "
                         f"'robust' (the default) or 'normalised' payout policy, or a Shapley estimator")


def payout_shares(
    values: Mapping[str, float],
    budget: float = 1.0,
    policy: str = "positive",
    kind: str = ValueKind.SHAPLEY,
    replicas: Sequence[Sequence[str]] = (),
    threshold: float | None = None,
) -> Payout:
    """Split ``budget`` among owners according to their values under ``policy``.

    ``positive`` pays ``max(φ_i, 0) / Σ_j max(φ_j, 0)`` and nothing at all when
    no value is positive (there is no gain to share).  ``signed`` pays
    ``φ_i / Σ_j φ_j`` and nothing when that sum is (numerically) zero.
    ``robust`` pays like ``positive`` from values the caller made replication-robust; it names
    the ``replicas`` (groups of owner names paid as one source) found at similarity ``threshold``.
    """
    if replicas and policy != "robust":
        raise ValueError(f"replica groups are paid as one source only under the 'robust' policy, not {policy!r}")
    check_payable(kind, policy)
    value_kind = ValueKind(kind)
    budget = float(budget)
    if not math.isfinite(budget) or budget < 0:
        raise ValueError(f"budget must be finite and >= 0, got {budget}")
    vals = {str(k): float(v) for k, v in values.items()}
    bad = [k for k, v in vals.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"values must be finite; not finite for: {', '.join(bad)}")
    flagged = tuple(k for k, v in vals.items() if v < 0)

    groups = tuple(tuple(str(m) for m in g) for g in replicas)
    if policy == "robust":
        shares, description = _robust(vals, flagged, value_kind, groups, threshold)
    elif policy == "positive":
        shares, description = _positive(vals, flagged)
    elif policy == "signed":
        shares, description = _signed(vals)
    else:
        shares, description = _normalised(vals, flagged, value_kind)
    amounts = {k: s * budget for k, s in shares.items()}
    return Payout(policy, budget, shares, amounts, flagged, description, value_kind, groups)


def _robust(vals: dict[str, float], flagged: tuple[str, ...], kind: ValueKind,
            groups: tuple[tuple[str, ...], ...], threshold: float | None) -> tuple[dict[str, float], str]:
    unknown = sorted({m for g in groups for m in g} - set(vals))
    if unknown:
        raise ValueError(f"replica groups name owners without a value: {', '.join(unknown)}")
    at = f" (similarity ≥ {threshold:g})" if threshold is not None else ""
    if groups:
        named = "; ".join(" and ".join(g) for g in groups)
        head = (f"Replication-robust: owners with near-identical held-out preference margins{at} are paid as "
                f"one source, what one of them would earn alone, split among them: {named}")
    else:
        head = (f"Replication-robust: no owners have near-identical held-out preference margins{at}, "
                "so no one is grouped and this is the positive policy")
    shares, tail = _normalised(vals, flagged, kind) if kind not in EFFICIENT_KINDS else _positive(vals, flagged)
    return shares, f"{head}. {tail}"


def _positive(vals: dict[str, float], flagged: tuple[str, ...]) -> tuple[dict[str, float], str]:
    total = sum(max(v, 0.0) for v in vals.values())
    if total <= 0:
        return (
            {k: 0.0 for k in vals},
            "No owner has a positive Shapley value, so nothing is paid out under the "
            "positive-proportional policy.",
        )
    shares = {k: max(v, 0.0) / total for k, v in vals.items()}
    if flagged:
        tail = f"; owners with negative values ({', '.join(flagged)}) receive nothing and are flagged."
    else:
        tail = "; no owner has a negative value."
    return shares, "Budget split in proportion to positive Shapley values" + tail


def _signed(vals: dict[str, float]) -> tuple[dict[str, float], str]:
    total = math.fsum(vals.values())
    scale = math.fsum(abs(v) for v in vals.values())
    if scale == 0 or abs(total) <= _SIGNED_ZERO_RTOL * scale:
        return (
            {k: 0.0 for k in vals},
            "Signed Shapley values sum to zero, so signed proportional shares are undefined "
            "and nothing is paid out.",
        )
    shares = {k: v / total for k, v in vals.items()}
    head = "Budget split in proportion to signed Shapley values (share = value / sum of values)"
    if total < 0:
        return shares, (
            head + "; WARNING: the values sum to a negative number, so owners with positive values "
            "get negative shares (they would owe) and owners with negative values are paid."
        )
    if any(s < 0 for s in shares.values()):
        return shares, (
            head + "; WARNING: some shares are negative, meaning those owners would owe rather than receive."
        )
    return shares, head + "."


def _normalised(vals: dict[str, float], flagged: tuple[str, ...], kind: ValueKind) -> tuple[dict[str, float], str]:
    name = kind.label
    total = sum(max(v, 0.0) for v in vals.values())
    if total <= 0:
        return {k: 0.0 for k in vals}, f"No owner has a positive {name} value, so nothing is paid out."
    shares = {k: max(v, 0.0) / total for k, v in vals.items()}
    description = f"Budget split in proportion to positive {name} values"
    if flagged:
        description += f"; owners with negative values ({', '.join(flagged)}) receive nothing and are flagged"
    description += "."
    if kind not in EFFICIENT_KINDS:
        description += (f" {name} values are not efficient: these shares normalise them, they do not divide "
                        "the gain v(N) − v(∅) by contribution.")
    return shares, description
