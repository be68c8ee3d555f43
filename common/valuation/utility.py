"""The ``preference`` utility (method.md §3): coalition scores from one margin matrix.

The coordinator scores each held-out pair ``(x, y_w, y_l)`` once under the base
π₀ and once under every owner's model.  Because a coalition's log-probs are a
weighted sum of those (see :mod:`common.valuation.composition`) and the per-prompt
normaliser cancels inside a pair, the implicit reward margin of coalition
``S`` on pair ``p`` is exactly

    m_S[p] = Σ_{l∈S} w_l · M[l, p],
    M[l, p] = [lp_l(y_w) − lp_0(y_w)] − [lp_l(y_l) − lp_0(y_l)].

The base's own margin is 0 by construction, so ``w0`` drops out.  Every one of
the ``2**n`` coalition utilities is therefore arithmetic on an ``n × P``
matrix, which is what makes exact Shapley values affordable for n ≈ 20.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.valuation.bits import check_masks, check_players
from common.valuation.composition import weight_fractions

__all__ = [
    "UTILITY_METRICS",
    "preference_margins",
    "coalition_margins",
    "accuracy",
    "mean_logsigmoid",
    "coalition_utilities",
    "all_masks",
]

#: ``accuracy``: share of held-out pairs the coalition model ranks correctly
#: (ties count ½, so the base model scores exactly 0.5).  ``logsigmoid``: the
#: mean of ``log σ(β·m)``, i.e. minus the DPO loss — a smooth score that still
#: moves when no pair's ranking flips.
UTILITY_METRICS: tuple[str, ...] = ("accuracy", "logsigmoid")


def preference_margins(
    base_chosen: np.ndarray,
    base_rejected: np.ndarray,
    owner_chosen: np.ndarray,
    owner_rejected: np.ndarray,
) -> np.ndarray:
    """Per-owner implicit reward margins ``M`` of shape ``(n, P)``.

    Inputs are sequence log-probs of the chosen and rejected responses: the
    base's of shape ``(P,)`` and the owners' of shape ``(n, P)``.  Non-finite
    inputs are rejected: a ``-inf`` sequence log-prob on both sides of a
    difference gives ``nan``, which would silently turn every coalition
    containing that owner into ``nan``.
    """
    bc = _as_float(base_chosen, "base_chosen")
    br = _as_float(base_rejected, "base_rejected")
    oc = _as_float(owner_chosen, "owner_chosen")
    orj = _as_float(owner_rejected, "owner_rejected")
    if bc.ndim != 1 or bc.shape[0] == 0:
        raise ValueError(f"base_chosen must have shape (P,) with P >= 1, got {bc.shape}")
    (P,) = bc.shape
    if br.shape != (P,):
        raise ValueError(f"base_rejected must have shape ({P},) like base_chosen, got {br.shape}")
    if oc.ndim != 2 or oc.shape[1] != P:
        raise ValueError(f"owner_chosen must have shape (n, {P}), got {oc.shape}")
    if orj.shape != oc.shape:
        raise ValueError(f"owner_rejected must have shape {oc.shape} like owner_chosen, got {orj.shape}")
    return (oc - bc[None, :]) - (orj - br[None, :])


def coalition_margins(
    M: np.ndarray,
    masks: np.ndarray,
    rule: str = "sum",
    sizes: Sequence[float] | None = None,
) -> np.ndarray:
    """Margins of every coalition in ``masks`` on every pair, ``(A @ M) / d``, shape ``(m, P)``.

    The product is evaluated with ``np.einsum`` (no BLAS): its sum over owners
    runs in a fixed order per row, so a coalition's margins do not depend on
    which other coalitions share the batch.  BLAS matmul picks kernels by
    batch shape and can change the last bit, which would make results depend
    on ``chunk_size`` and could flip ties in the accuracy metric.
    """
    M = _check_margin_matrix(M)
    masks = check_masks(masks, M.shape[0])
    numerators, denominators = weight_fractions(masks, M.shape[0], rule, sizes)
    # Sum first, divide once: integer-weighted sums are exact, so an exact tie stays a tie.
    return np.einsum("mn,np->mp", numerators, M, optimize=False) / denominators[:, None]


def accuracy(margins: np.ndarray) -> np.ndarray:
    """Mean over the last axis of ``1[m > 0] + ½·1[m = 0]``.

    Counting ties as ½ makes the empty coalition (all margins exactly 0) score
    exactly 0.5 — a coin flip — instead of 0, so Shapley values measure gain
    over the base rather than over an arbitrary tie-breaking convention.
    """
    m = _check_last_axis(margins)
    return np.mean((m > 0) + 0.5 * (m == 0), axis=-1)


def mean_logsigmoid(margins: np.ndarray, beta: float) -> np.ndarray:
    """Mean over the last axis of ``log σ(β·m)`` (= minus the DPO loss).

    Written as ``−logaddexp(0, −β·m)`` so that large negative margins give a
    large finite negative value instead of ``log(0) = -inf``, and large
    positive ones don't round ``σ`` to 1 before the log.
    """
    m = _check_last_axis(margins)
    if not np.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be positive and finite, got {beta}")
    return np.mean(-np.logaddexp(0.0, -beta * m), axis=-1)


def coalition_utilities(
    M: np.ndarray,
    masks: np.ndarray,
    metric: str = "accuracy",
    rule: str = "sum",
    sizes: Sequence[float] | None = None,
    beta: float = 0.1,
    chunk_size: int = 4096,
) -> np.ndarray:
    """Utility ``v(S)`` of every coalition in ``masks``, shape ``(m,)``.

    Coalitions are processed ``chunk_size`` at a time so that peak memory is
    ``O(chunk_size · P)`` rather than ``O(2**n · P)`` (for n = 20 and a few
    thousand pairs the full margin tensor would need tens of GB).  Results do
    not depend on ``chunk_size``.  ``beta`` is only read by ``logsigmoid``.
    """
    if metric not in UTILITY_METRICS:
        raise ValueError(f"unknown utility metric {metric!r}; valid metrics: {', '.join(UTILITY_METRICS)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if metric == "logsigmoid" and (not np.isfinite(beta) or beta <= 0):
        raise ValueError(f"beta must be positive and finite, got {beta}")
    M = _check_margin_matrix(M)
    masks = check_masks(masks, M.shape[0])
    out = np.empty(masks.shape[0], dtype=np.float64)
    for start in range(0, masks.shape[0], chunk_size):
        stop = start + chunk_size
        margins = coalition_margins(M, masks[start:stop], rule, sizes)
        if metric == "accuracy":
            out[start:stop] = accuracy(margins)
        else:
            out[start:stop] = mean_logsigmoid(margins, beta)
    return out


def all_masks(n: int) -> np.ndarray:
    """Every coalition of ``n`` owners, ``0 .. 2**n − 1``, as int64.

    Index ``k`` of the result is coalition ``k``, so a utility table computed
    from it can be handed to :func:`common.valuation.shapley.exact_shapley` unchanged.
    """
    return np.arange(1 << check_players(n), dtype=np.int64)


def _as_float(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite log-probs (nan or inf)")
    return arr


def _check_margin_matrix(M: np.ndarray) -> np.ndarray:
    arr = np.asarray(M, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"margin matrix must have shape (n, P) with P >= 1, got {arr.shape}")
    return arr


def _check_last_axis(margins: np.ndarray) -> np.ndarray:
    m = np.asarray(margins, dtype=np.float64)
    if m.ndim == 0 or m.shape[-1] == 0:
        raise ValueError(f"margins need a non-empty last axis (pairs), got shape {m.shape}")
    return m
