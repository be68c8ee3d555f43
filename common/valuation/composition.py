"""Coalition models by language-model arithmetic (method.md §2).

Each owner ``l`` fine-tunes its own policy ``π_l`` against the shared base
``π₀``.  The model of a coalition ``S`` is never trained: its log-probabilities
are a weighted sum of the owners' and the base's log-probabilities,

    log π_S = Σ_{l∈S} w_l · log π_l + w₀ · log π₀   (+ a normaliser),

so ``n`` fine-tunings give all ``2**n`` coalition models.  This module owns the
weights of that sum (one function for a single coalition, one vectorised over
many coalitions given as bitmasks, see :mod:`common.valuation.bits`) and the clamped
combination of log-probability arrays.  In every rule the weights, base
included, sum to 1, which is what makes the combination a (log-)model of the
same scale as its parts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.valuation.bits import check_masks, mask_of, members_of, popcount

__all__ = [
    "COMPOSITION_RULES",
    "DEFAULT_FLOOR",
    "coalition_weights",
    "weight_matrix",
    "compose_logprobs",
    "mask_of",
    "members_of",
    "popcount",
]

#: ``sum`` is the paper's rule (sequential DPO adds the owners' rewards);
#: ``mean`` is the geometric mean of the owners' models (0 weight on π₀);
#: ``size`` is the mean weighted by the owners' data sizes.
COMPOSITION_RULES: tuple[str, ...] = ("sum", "mean", "size")

#: Finite stand-in for ``log 0``.  The ``sum`` rule puts weight ``1 − |S|`` on
#: π₀, i.e. it *extrapolates*; with a ``-inf`` anywhere the result would be
#: ``inf − inf = nan``.  −1e4 is far below any realistic token log-prob while
#: staying far from float overflow after multiplication by ``|S|``.
DEFAULT_FLOOR = -1e4


def coalition_weights(
    members: Sequence[int],
    n: int,
    rule: str = "sum",
    sizes: Sequence[float] | None = None,
) -> tuple[np.ndarray, float]:
    """Weights of the owners' and the base's log-probs in the model of one coalition.

    Returns ``(w, w0)`` where ``w`` has shape ``(n,)`` (zero for non-members)
    and ``w0`` is the weight on the base model π₀:

    * ``sum``:  ``w_l = 1`` for members, ``w0 = 1 − |S|``;
    * ``mean``: ``w_l = 1/|S|`` for members, ``w0 = 0``;
    * ``size``: ``w_l = |D_l| / Σ_{j∈S} |D_j|`` for members, ``w0 = 0``
      (``sizes`` required).

    The empty coalition is the base model itself under every rule
    (``w = 0``, ``w0 = 1``), which is why ``v(∅)`` is the base's utility.

    This is the single-coalition view of :func:`weight_matrix`, which it calls,
    so the two can never disagree.
    """
    _check_rule(rule)
    members = list(members)
    for i in members:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise ValueError(f"member indices must be integers, got {i!r}")
        if not 0 <= int(i) < n:
            raise ValueError(f"member {int(i)} out of range for {n} owners (valid: 0..{n - 1})")
    W, w0 = weight_matrix(np.array([mask_of(members)], dtype=np.int64), n, rule, sizes)
    return W[0], float(w0[0])


BASE_TERM = -1
"""Index of the base model π₀ in :func:`coalition_terms`."""


def coalition_terms(
    members: Sequence[int],
    n: int,
    rule: str = "sum",
    sizes: Sequence[float] | None = None,
) -> tuple[tuple[int, float], ...]:
    """The coalition model as a weighted sum: ``((component, weight), …)``, the one formula.

    ``log π_S = Σ w_k · max(log π_k, floor)`` over these terms, whatever computes it: the
    numpy scorer (:func:`compose_logprobs`) and the torch decoder
    (``server.valuation.decoding.compose_next_token``) both read this list, so they combine the
    same components with the same weights in the same order. Component :data:`BASE_TERM` is
    π₀ and comes first when its weight is nonzero; members follow in ascending order; zero
    weights are left out; the empty coalition is π₀ alone with weight 1.
    """
    w, w0 = coalition_weights(members, n, rule, sizes)
    terms = [(BASE_TERM, float(w0))] if w0 != 0.0 else []
    terms += [(i, float(w[i])) for i in sorted(int(j) for j in members) if w[i] != 0.0]
    return tuple(terms) or ((BASE_TERM, 1.0),)


def weight_matrix(
    masks: np.ndarray,
    n: int,
    rule: str = "sum",
    sizes: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Composition weights for many coalitions at once.

    ``masks`` holds integer bitmasks (bit ``i`` set = owner ``i`` is a member).
    Returns ``W`` of shape ``(m, n)`` and ``w0`` of shape ``(m,)``, both
    float64, with row ``k`` equal to ``coalition_weights`` of ``masks[k]``.

    Vectorising matters because the preference utility evaluates all ``2**n``
    coalitions; a Python loop over ``10**6`` coalitions would dominate the
    valuation's cost.  ``sizes`` is only read by the ``size`` rule.
    """
    masks = check_masks(masks, n)
    numerators, denominators = weight_fractions(masks, n, rule, sizes)
    w0 = (1.0 - popcount(masks)) if rule == "sum" else (masks == 0).astype(np.float64)
    return numerators / denominators[:, None], w0


def rule_terms(n: int, rule: str = "sum", sizes: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Every rule's owner weight is ``a_l / d_S`` with ``d_S = Σ_{j∈S} b_j``: return ``(a, b)``.

    ``sum``: ``a = 1``, no denominator (``b`` is None, ``d_S = 1``); ``mean``: ``a = b = 1``;
    ``size``: ``a = b = |D|``. Keeping numerator and denominator apart lets callers add
    margins exactly first and divide once — or skip the division where only a sign matters.
    """
    _check_rule(rule)
    if rule == "sum":
        return np.ones(n), None
    if rule == "mean":
        return np.ones(n), np.ones(n)
    s = _check_sizes(sizes, n)
    return s, s


def weight_fractions(masks: np.ndarray, n: int, rule: str = "sum",
                     sizes: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Numerators ``(m, n)`` and denominators ``(m,)`` of the owner weights of each coalition.

    The empty coalition's denominator is 1 (its numerators are all 0).
    """
    a, b = rule_terms(n, rule, sizes)
    shifts = np.arange(n, dtype=np.int64)
    member = ((masks[:, None] >> shifts[None, :]) & 1).astype(np.float64)
    if b is None:
        return member * a[None, :], np.ones(masks.shape[0])
    d = member @ b
    return member * a[None, :], np.where(d == 0, 1.0, d)


def compose_logprobs(
    base: np.ndarray,
    owners: np.ndarray,
    members: Sequence[int],
    rule: str = "sum",
    sizes: Sequence[float] | None = None,
    floor: float = DEFAULT_FLOOR,
) -> np.ndarray:
    """Log-probabilities (or logits) of the coalition model, in float64.

    ``base`` has any shape (e.g. ``(batch, seq, vocab)``); ``owners`` has shape
    ``(n, *base.shape)``.  Values below ``floor`` — in particular ``-inf`` —
    are raised to ``floor`` before combining, because the ``sum`` rule gives π₀
    a negative weight and ``-inf`` terms would otherwise yield ``nan``.

    Only members (and the base, when its weight is nonzero) are read, in
    ascending owner order, so that ``S = ∅`` returns the (clamped) base and a
    single-owner coalition returns that owner's values bit for bit.
    ``nan`` or ``+inf`` inputs are rejected: they are never valid log-probs and
    would silently poison every coalition containing that owner.
    """
    if not np.isfinite(floor):
        raise ValueError(f"floor must be finite, got {floor}")
    base = np.asarray(base, dtype=np.float64)
    owners = np.asarray(owners, dtype=np.float64)
    if owners.ndim != base.ndim + 1 or owners.shape[1:] != base.shape:
        raise ValueError(
            f"owners must have shape (n, *base.shape) = (n, {', '.join(map(str, base.shape))}), "
            f"got {owners.shape}"
        )
    out = np.zeros(base.shape, dtype=np.float64)
    for k, weight in coalition_terms(members, owners.shape[0], rule, sizes):
        component = base if k == BASE_TERM else owners[k]
        out += weight * _clamp(component, floor, "base" if k == BASE_TERM else f"owner {k}")
    return out


def _clamp(x: np.ndarray, floor: float, what: str) -> np.ndarray:
    if np.isnan(x).any() or np.isposinf(x).any():
        raise ValueError(f"{what} log-probs contain nan or +inf")
    return np.maximum(x, floor)


def _check_rule(rule: str) -> None:
    if rule not in COMPOSITION_RULES:
        raise ValueError(f"unknown composition rule {rule!r}; valid rules: {', '.join(COMPOSITION_RULES)}")


def _check_sizes(sizes: Sequence[float] | None, n: int) -> np.ndarray:
    """Data sizes for the ``size`` rule: one positive finite number per owner.

    Zero sizes are refused: an owner with no data has no model to compose, and
    a coalition of such owners would have undefined (0/0) weights.
    """
    if sizes is None:
        raise ValueError("the 'size' composition rule needs sizes (|D_l| for every owner)")
    s = np.asarray(sizes, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"sizes must have one entry per owner, shape ({n},), got {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"sizes must be positive and finite, got {s.tolist()}")
    return s
