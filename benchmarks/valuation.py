"""Micro-benchmarks of the valuation engine (no model, no Flower): pure arithmetic on margins.

Each figure is the best of a few repeats (the least disturbed by other work on the machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from common.valuation.estimators import estimate
from common.valuation.preference_game import all_coalition_utilities, preference_game
from common.valuation.shapley import exact_shapley
from common.valuation.stopping import MaxEvaluations
from common.valuation.utility import all_masks, coalition_utilities

ALL_COALITIONS_N16_TARGET_S = 1.0


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure() -> dict[str, dict]:
    """Figures as ``{name: {"value", "unit", ...}}`` ready for results.json."""
    rng = np.random.default_rng(0)
    m16 = rng.normal(size=(16, 2000))
    m20 = rng.normal(size=(20, 200))
    figures: dict[str, dict] = {}
    fast = best_of(lambda: all_coalition_utilities(m16))
    figures["all_coalitions_n16_p2000_s"] = {
        "value": round(fast, 4), "unit": "s", "target": {"max": ALL_COALITIONS_N16_TARGET_S},
        "meets_target": fast < ALL_COALITIONS_N16_TARGET_S,
        "note": "preference accuracy of all 2^16 coalitions on 2,000 held-out pairs (subset-sum path)"}
    generic = best_of(lambda: coalition_utilities(m16, all_masks(16)), repeats=1)
    figures["all_coalitions_n16_p2000_generic_s"] = {
        "value": round(generic, 4), "unit": "s",
        "note": "same utilities through the generic chunked weight-matrix path (what sampled coalitions use)"}
    table = all_coalition_utilities(m20)
    figures["exact_shapley_n20_s"] = {"value": round(best_of(lambda: exact_shapley(table, 20)), 4), "unit": "s",
                                      "note": "Shapley values from a full 2^20 utility table"}
    figures["exact_valuation_n20_p200_s"] = {
        "value": round(best_of(lambda: estimate(preference_game([f"o{i}" for i in range(20)], m20), "exact"),
                               repeats=1), 4),
        "unit": "s", "note": "end-to-end exact valuation of 20 owners: game, 2^20 utilities, memo, Shapley"}
    m32 = rng.normal(size=(32, 500))
    players = [f"o{i}" for i in range(32)]
    budget = 100_000
    for name in ("permutation", "kernel", "banzhaf"):
        seconds = best_of(lambda: estimate(preference_game(players, m32), name, stop=MaxEvaluations(budget)),
                          repeats=1)
        figures[f"{name}_n32_p500_100k_evals_s"] = {
            "value": round(seconds, 3), "unit": "s",
            "note": f"{name} estimator, 32 owners, 500 pairs, a budget of {budget} coalition evaluations"}
    return figures
