"""Cooperative games over owners: players, a utility over coalitions, and its memo.

A coalition is an integer bitmask (bit ``i`` set ⇔ player ``i`` is a member, see
:mod:`common.valuation.bits`). Estimators only ever call :meth:`Game.utilities` with a batch of masks;
the game answers from its memo where it can, computes the rest in one vectorised call, and
counts how many distinct utilities it really computed — so a second estimator, or a re-run
with a persistent store, never pays twice for the same coalition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from common.valuation.bits import check_masks, mask_of, members_of

BatchUtility = Callable[[np.ndarray], np.ndarray]


class UtilityStore(Protocol):
    """Persistent memo of utilities (the coordinator's ledger implements it)."""

    def load_utilities(self, game_key: str, masks: np.ndarray) -> dict[int, float]: ...

    def save_utilities(self, game_key: str, values: Mapping[int, float]) -> None: ...


DENSE_MEMO_MAX_PLAYERS = 20
"""Up to this many players the memo is a dense array (8 MiB at 20): O(1) vectorised lookups."""


class Game:
    """A game of ``len(players)`` players whose utility is computed in batches and memoised.

    Args:
        players: player names, in bit order.
        utility: vectorised utility, ``masks (m,) int64 -> values (m,) float``.
        key: identifies the game in a persistent ``store`` (e.g. run id + utility name).
        store: optional persistent memo; utilities found there are not recomputed.
    """

    def __init__(self, players: Sequence[str], utility: BatchUtility, *, key: str = "",
                 store: UtilityStore | None = None) -> None:
        self.players = tuple(players)
        if len(set(self.players)) != len(self.players):
            raise ValueError(f"player names must be unique, got {self.players}")
        self._utility = utility
        self._dense = np.full(1 << self.n, np.nan) if self.n <= DENSE_MEMO_MAX_PLAYERS else None
        self._sparse: dict[int, float] = {}
        self.key = key
        self._store = store
        self.computed = 0
        """Distinct utilities computed by this game object (memo and store hits excluded)."""
        self.requested = 0
        """Utilities asked for, hits included."""

    @property
    def n(self) -> int:
        return len(self.players)

    def _known(self, masks: np.ndarray) -> np.ndarray:
        if self._dense is not None:
            return ~np.isnan(self._dense[masks])
        return np.fromiter((m in self._sparse for m in masks.tolist()), dtype=bool, count=masks.size)

    def _remember(self, masks: np.ndarray, values: np.ndarray) -> None:
        if self._dense is not None:
            self._dense[masks] = values
        else:
            self._sparse.update(zip(masks.tolist(), values.tolist()))

    def _recall(self, masks: np.ndarray) -> np.ndarray:
        if self._dense is not None:
            return self._dense[masks].copy()
        return np.array([self._sparse[m] for m in masks.tolist()], dtype=np.float64)

    def utilities(self, masks: np.ndarray | Sequence[int]) -> np.ndarray:
        """``v(S)`` for every mask, computing only those not memoised yet."""
        masks = check_masks(np.asarray(masks, dtype=np.int64), self.n)
        self.requested += int(masks.size)
        missing = np.unique(masks[~self._known(masks)])
        if missing.size and self._store is not None:
            stored = self._store.load_utilities(self.key, missing)
            if stored:
                found = np.fromiter(stored, dtype=np.int64, count=len(stored))
                self._remember(found, np.fromiter(stored.values(), dtype=np.float64, count=len(stored)))
                missing = missing[~self._known(missing)]
        if missing.size:
            values = np.asarray(self._utility(missing), dtype=np.float64)
            if values.shape != missing.shape:
                raise ValueError(f"utility returned shape {values.shape} for {missing.shape} coalitions")
            if not np.all(np.isfinite(values)):
                raise ValueError("utility returned nan or inf")
            self._remember(missing, values)
            self.computed += int(missing.size)
            if self._store is not None:
                self._store.save_utilities(self.key, dict(zip(missing.tolist(), values.tolist())))
        return self._recall(masks)

    def utility(self, mask: int) -> float:
        """``v(S)`` of one coalition."""
        return float(self.utilities(np.array([mask]))[0])

    def known(self) -> tuple[np.ndarray, np.ndarray]:
        """Every coalition evaluated so far and its utility, by increasing mask (for reports)."""
        if self._dense is not None:
            masks = np.flatnonzero(~np.isnan(self._dense)).astype(np.int64)
            return masks, self._dense[masks].copy()
        masks = np.array(sorted(self._sparse), dtype=np.int64)
        return masks, self._recall(masks)

    @classmethod
    def from_function(cls, players: Sequence[str], value: Callable[[frozenset[str]], float], **kw: Any) -> "Game":
        """A game whose utility is ``value(coalition)``, a coalition being the frozenset of its
        members' names: the plain-Python way to state a game (it is called once per coalition)."""
        names = tuple(players)

        def batch(masks: np.ndarray) -> np.ndarray:
            return np.array([float(value(frozenset(names[i] for i in members_of(int(m), len(names)))))
                             for m in masks.tolist()], dtype=np.float64)

        return cls(names, batch, **kw)

    @classmethod
    def from_utilities(cls, players: Sequence[str], utilities: Mapping[frozenset[str], float], **kw: Any) -> "Game":
        """A game given by stored utilities, ``{frozenset of member names: v(S)}`` (e.g. a report's
        coalition table): estimators read them and compute nothing. A coalition that is not
        stored is a ``KeyError`` naming it, never a silent zero."""
        names = tuple(players)
        unknown = {name for coalition in utilities for name in coalition} - set(names)
        if unknown:
            raise ValueError(f"stored coalitions name players outside the game: {sorted(unknown)}")
        table = {mask_of(names.index(name) for name in coalition): float(v) for coalition, v in utilities.items()}

        def lookup(masks: np.ndarray) -> np.ndarray:
            missing = [m for m in masks.tolist() if m not in table]
            if missing:
                shown = sorted(names[i] for i in members_of(missing[0], len(names)))
                raise KeyError(f"no stored utility for the coalition {shown} ({len(missing)} missing)")
            return np.array([table[m] for m in masks.tolist()], dtype=np.float64)

        return cls(names, lookup, **kw)

    @classmethod
    def from_table(cls, players: Sequence[str], table: np.ndarray | Sequence[float], **kw: Any) -> "Game":
        """A game given by its full utility table ``table[mask]``."""
        values = np.asarray(table, dtype=np.float64)
        if values.shape != (1 << len(players),):
            raise ValueError(f"table must have 2**{len(players)} entries, got {values.shape}")
        return cls(players, lambda masks: values[masks], **kw)
