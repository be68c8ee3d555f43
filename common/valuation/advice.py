"""Which data to pool: the best coalition, whom the pool is better without, value per example.

Why it lives beside the values: a valuation already holds — or, for arithmetic games, can
compute for free — the utility of every coalition of owners, so the question owners ask
before "how do we split it" ("which of us should pool at all?") is a search over numbers
already at hand, with no model work.

* **Best coalition.** When every one of the ``2ⁿ`` utilities is known (an exact valuation) it is
  the argmax over all of them (``method = "exact"``).  Otherwise, when the game may be asked
  for more utilities (arithmetic preference games), a beam search: start from ∅, add one owner
  at a time to each of the ``beam_width`` best coalitions of the previous size, keep the
  ``beam_width`` best of each size, and report the best seen (``"beam"``; at most
  ``beam_width·n²`` utilities, all memoised).  When utilities are dear (reward games decode
  every coalition) and not all known, the best of the coalitions already evaluated
  (``"evaluated"``).  Ties (within rounding, ``1e-12`` of the utilities' scale) go to the
  larger coalition, then to the smaller mask: pooling more data for the same utility is the
  advice a data collaboration wants.
* **Better without.** Owner ``i`` such that ``v(N ∖ i) > v(N)`` beyond rounding: removing its data raises the
  pooled model's utility.  A Shapley value below 0 says "harmful on average over coalitions";
  this says "harmful to the pool you would actually build".
* **Value per example.** ``φ_i / examples_i``: what one of the owner's preference pairs is worth,
  in the utility's own unit, for comparing owners of very different sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.valuation.bits import members_of, popcount
from common.valuation.game import Game

__all__ = ["BEAM_WIDTH", "MixAdvice", "marginals_at", "mix_advice"]

BEAM_WIDTH = 4
"""Coalitions kept per size by the beam search (``4·n²`` utilities at most)."""


@dataclass(frozen=True)
class MixAdvice:
    """The data-mix advice of one game (see the module docstring)."""

    best: tuple[str, ...]
    best_value: float
    grand_value: float
    method: str
    searched: int
    better_without: dict[str, float]
    per_example: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"best": list(self.best), "best_value": self.best_value, "grand_value": self.grand_value,
                "gain_over_grand": self.best_value - self.grand_value, "method": self.method,
                "searched": self.searched, "better_without": dict(self.better_without),
                "per_example": dict(self.per_example)}


def _tolerance(values: np.ndarray) -> float:
    """Utilities closer than this are equal: sums in another order differ in the last bits."""
    return 1e-12 * (float(np.abs(values).max()) + 1.0) if values.size else 0.0


def _best(masks: np.ndarray, values: np.ndarray) -> tuple[int, float]:
    """The mask of largest value; ties (within rounding) to more members, then to the smaller mask."""
    tied = values >= values.max() - _tolerance(values)
    order = np.lexsort((masks[tied], -popcount(masks[tied])))
    return int(masks[tied][order[0]]), float(values[tied][order[0]])


def _beam(game: Game, width: int) -> tuple[int, float, int]:
    """Best coalition found by a beam search of ``width`` per size, and how many it looked at."""
    n = game.n
    full = (1 << n) - 1
    seen = {0, full}
    best_mask, best_value = _best(np.array([0, full], dtype=np.int64), game.utilities(np.array([0, full])))
    beam = np.zeros(1, dtype=np.int64)
    for _ in range(n - 1):
        grown = (beam[:, None] | (np.int64(1) << np.arange(n, dtype=np.int64))[None, :]).ravel()
        candidates = np.unique(grown[grown != np.repeat(beam, n)])
        values = game.utilities(candidates)
        seen.update(candidates.tolist())
        mask, value = _best(np.array([best_mask, *candidates.tolist()], dtype=np.int64),
                            np.array([best_value, *values.tolist()]))
        best_mask, best_value = mask, value
        rounded = np.round(values / _tolerance(values)) if values.size else values  # rounding ties as ties
        order = np.lexsort((candidates, -popcount(candidates), -rounded))
        beam = candidates[order[:width]]
    return best_mask, best_value, len(seen)


def mix_advice(game: Game, values: Mapping[str, float], examples: Sequence[int], *,
               search: bool = True, beam_width: int = BEAM_WIDTH) -> MixAdvice:
    """Data-mix advice for ``game`` whose Shapley (or other) ``values`` are known.

    ``examples`` are the owners' example counts in the game's player order.  ``search`` allows
    new utility evaluations (beam search, leave-one-out coalitions); without it only the
    coalitions already evaluated are used and owners whose leave-one-out coalition was not
    evaluated are not judged.
    """
    n = game.n
    if len(examples) != n:
        raise ValueError(f"{len(examples)} example counts for {n} owners")
    full = (1 << n) - 1
    masks, known = game.known()
    if masks.size == 1 << n:
        best_mask, best_value = _best(masks, known)
        method, searched = "exact", int(masks.size)
    elif search:
        best_mask, best_value, searched = _beam(game, beam_width)
        method = "beam"
    else:
        best_mask, best_value = _best(masks, known)
        method, searched = "evaluated", int(masks.size)
    grand = float(game.utilities(np.array([full]))[0])  # every valuation evaluated N: a memo hit
    without = np.array([full ^ (1 << i) for i in range(n)], dtype=np.int64)
    if search:
        game.utilities(without)
    lookup = dict(zip(*(a.tolist() for a in game.known())))
    floor = grand + _tolerance(np.array([grand]))
    better = {game.players[i]: float(lookup[int(m)] - grand) for i, m in enumerate(without)
              if int(m) in lookup and lookup[int(m)] > floor}
    per_example = {p: float(values[p]) / examples[i] for i, p in enumerate(game.players) if examples[i] > 0}
    return MixAdvice(tuple(game.players[i] for i in members_of(best_mask, n)), best_value, grand, method,
                     searched, better, per_example)


def marginals_at(utilities: Mapping[frozenset[str], float], players: Sequence[str],
                 coalition: frozenset[str]) -> tuple[float, dict[str, float | None]]:
    """``v(S)`` and each owner's marginal contribution at ``S``, from stored utilities only.

    A member's is ``v(S) − v(S ∖ i)`` (what it adds to the others of ``S``), an outsider's
    ``v(S ∪ i) − v(S)`` (what it would add by joining); ``None`` where the neighbouring
    coalition was not evaluated.  ``KeyError`` when ``S`` itself was not.
    """
    value = utilities[coalition]
    marginal: dict[str, float | None] = {}
    for p in players:
        other = coalition - {p} if p in coalition else coalition | {p}
        if other not in utilities:
            marginal[p] = None
        else:
            marginal[p] = value - utilities[other] if p in coalition else utilities[other] - value
    return value, marginal
