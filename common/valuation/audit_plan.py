"""Which coalitions an audit retrains, and which sequential-DPO stages that takes (pure).

The audit (``--audit K``) checks the arithmetic inside a run: the federation really retrains K
coalitions by sequential DPO and the report compares their utilities with the arithmetic ones.
Only coalitions of two or more owners are worth it: a one-owner chain is that owner's own
adapter, the very model the arithmetic uses, so it would agree by construction. The grand
coalition is always audited (it is the payout's whole), the others are a seeded sample, and
each coalition's chain follows the roster's order so that coalitions sharing a prefix share
its stages.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

__all__ = ["ENUMERATE_MAX_PLAYERS", "audited_coalitions", "stage_plan"]

ENUMERATE_MAX_PLAYERS = 12
"""Up to this many owners the sample is drawn from the full list of coalitions; above, by
rejection from random subsets (the list would have 2ⁿ entries)."""


def audited_coalitions(n: int, k: int, seed: int) -> list[tuple[int, ...]]:
    """``k`` distinct coalitions of ≥ 2 of ``n`` owners (indices, ascending): the grand coalition
    and ``k − 1`` others drawn with ``seed``; fewer when fewer exist. Sorted by size, then members."""
    if k < 0:
        raise ValueError(f"an audit retrains k ≥ 0 coalitions, got {k}")
    if n < 2 or k == 0:
        return []
    grand = tuple(range(n))
    others_count = 2**n - n - 2  # coalitions of 2..n-1 owners
    wanted = min(k - 1, others_count)
    rng = random.Random(f"audit-{seed}-{n}")
    if n <= ENUMERATE_MAX_PLAYERS:
        others = [c for size in range(2, n) for c in itertools.combinations(range(n), size)]
        chosen = rng.sample(others, wanted)
    else:
        seen: set[tuple[int, ...]] = set()
        chosen = []
        while len(chosen) < wanted:
            members = tuple(i for i in range(n) if rng.random() < 0.5)
            if 2 <= len(members) < n and members not in seen:
                seen.add(members)
                chosen.append(members)
    return sorted([*chosen, grand], key=lambda c: (len(c), c))


def stage_plan(orders: Sequence[Sequence[int]]) -> list[list[tuple[int, ...]]]:
    """The stages to train for ``orders`` (chains of owner indices), grouped by depth: entry
    ``d`` lists the prefixes of length ``d + 2``, each once, in sorted order.

    Why by depth: a stage needs only its parent prefix's model, so every stage of one depth can
    train at once, each at its own owner; and a prefix shared by several chains is trained once.
    Stage 1 is never listed: it is the first owner's own adapter, already held.
    """
    prefixes = {tuple(order[:length]) for order in orders for length in range(2, len(order) + 1)}
    depth = max((len(p) for p in prefixes), default=1)
    return [sorted(p for p in prefixes if len(p) == length) for length in range(2, depth + 1)]
