"""Agreement statistics for comparing utilities and rankings (the fidelity study and the audit)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def ranks(x: ArrayLike) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    out = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        out[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation; nan when either side is constant (no linear relation to measure)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("pearson needs two sequences of equal length ≥ 2")
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if denominator > 0 else float("nan")


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's ρ: Pearson correlation of the (tie-averaged) ranks."""
    return pearson(ranks(x), ranks(y))


def kendall_tau(x: ArrayLike, y: ArrayLike) -> float:
    """Kendall's τ-b (tie-corrected); nan when either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("kendall_tau needs two sequences of equal length ≥ 2")
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    concordance = (sx * sy).sum()
    denominator = np.sqrt((sx != 0).sum() * (sy != 0).sum())
    return float(concordance / denominator) if denominator > 0 else float("nan")


def agreement(approximate: ArrayLike, reference: ArrayLike) -> dict[str, float]:
    """How well ``approximate`` (arithmetic coalition utilities) tracks ``reference`` (retrained
    ones): Pearson and Spearman correlation (nan below two points or on a constant side), and
    the largest and mean absolute error."""
    a, r = np.asarray(approximate, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != r.shape or a.ndim != 1 or not len(a):
        raise ValueError("agreement needs two non-empty sequences of equal length")
    error = np.abs(a - r)
    return {"pearson": pearson(a, r) if len(a) > 1 else float("nan"),
            "spearman": spearman(a, r) if len(a) > 1 else float("nan"),
            "max_abs_error": float(error.max()), "mean_abs_error": float(error.mean())}
