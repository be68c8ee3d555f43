"""Coalitions as integer bitmasks.

A coalition ``S ⊆ {0..n-1}`` is stored as the integer whose bit ``i`` is set
when owner ``i`` is a member.  This encoding is shared by the composition
rules, the utilities and the Shapley estimators so that a utility table can be
indexed directly by coalition (``utilities[mask]``) and so that the same mask
means the same coalition everywhere.  Keeping the bit helpers here, in one
place, avoids each module re-deriving popcounts or member lists slightly
differently.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["MAX_PLAYERS", "check_masks", "check_players", "mask_of", "members_of", "membership", "popcount"]

#: Masks are held in int64 arrays; one bit is kept free so that ``1 << n`` (the
#: number of coalitions) still fits.  Exact enumeration stops being affordable
#: long before this limit, so it only guards against silent overflow.
MAX_PLAYERS = 62

# SWAR ("SIMD within a register") constants for a 64-bit population count.
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


def popcount(masks: np.ndarray | int) -> np.ndarray:
    """Number of set bits of each mask, i.e. the coalition sizes ``|S|``.

    Implemented with the classic SWAR bit trick on ``uint64`` so that it is
    vectorised, independent of the numpy version (``np.bitwise_count`` only
    exists from numpy 2.0) and fast enough for all ``2**20`` coalitions.

    Returns an ``int64`` array with the shape of ``masks`` (0-d for a scalar).
    Negative masks are rejected because they have no coalition meaning.
    """
    arr = np.asarray(masks)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"masks must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise ValueError("masks must be non-negative")
    x = arr.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):  # the multiply deliberately wraps around
        x -= (x >> np.uint64(1)) & _M1
        x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
        x = (x + (x >> np.uint64(4))) & _M4
        x = (x * _H01) >> np.uint64(56)
    return x.astype(np.int64)


def membership(masks: np.ndarray, n: int, dtype: type = np.float64) -> np.ndarray:
    """``(m, n)`` matrix of membership bits: row ``k`` holds 1 in column ``i`` when player
    ``i`` is in coalition ``masks[k]``.

    The estimators build one for every batch they learn from; unpacking the masks' bytes
    (little-endian int64) is a third of the cost of shifting and masking each column.
    """
    arr = np.ascontiguousarray(np.asarray(masks, dtype="<i8")).reshape(-1, 1)
    bits = np.unpackbits(arr.view(np.uint8), axis=1, bitorder="little")[:, :n]
    return bits.astype(dtype)


def mask_of(members: Iterable[int]) -> int:
    """Bitmask of a coalition given by its member indices.

    A coalition is a *set*: a repeated member almost certainly signals a bug in
    the caller (e.g. two owners sharing an index), so duplicates raise rather
    than being silently merged.
    """
    mask = 0
    for raw in members:
        i = _as_index(raw)
        if i < 0 or i >= MAX_PLAYERS:
            raise ValueError(f"member index {i} outside 0..{MAX_PLAYERS - 1}")
        bit = 1 << i
        if mask & bit:
            raise ValueError(f"member {i} listed twice; a coalition is a set")
        mask |= bit
    return mask


def members_of(mask: int, n: int) -> tuple[int, ...]:
    """Sorted member indices of ``mask`` for a game with ``n`` players.

    ``n`` is required so that a mask naming a non-existent owner is caught
    here instead of turning into an index error further down.
    """
    check_players(n)
    mask = _as_index(mask)
    if mask < 0 or mask >> n:
        raise ValueError(f"mask {mask} is not a coalition of {n} players")
    return tuple(i for i in range(n) if (mask >> i) & 1)


def check_masks(masks: np.ndarray | Iterable[int], n: int) -> np.ndarray:
    """Validate coalition masks for ``n`` players and return them as 1-D int64.

    Every vectorised entry point calls this once so that out-of-range masks
    fail loudly with the offending value instead of producing wrong weights.
    """
    check_players(n)
    arr = np.asarray(masks)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"masks must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"masks must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >> n:
        bad = lo if lo < 0 else hi
        raise ValueError(f"mask {bad} is not a coalition of {n} players (valid: 0..{(1 << n) - 1})")
    return arr


def check_players(n: object) -> int:
    """``n`` as an int if it is a valid number of players (0..``MAX_PLAYERS``); else ``ValueError``.

    The one check of a player count: every function taking ``n`` calls it, so all refuse the
    same values (a bool, a float, a negative or too large count) with the same message.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= MAX_PLAYERS:
        raise ValueError(f"number of players must be an int in 0..{MAX_PLAYERS}, got {n!r}")
    return int(n)




def _as_index(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"expected an integer index, got {value!r}")
    return int(value)
