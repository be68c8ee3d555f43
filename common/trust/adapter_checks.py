"""Is a received adapter one the coordinator may value? And do two owners' adapters look copied?

A submission is valued only if it is exactly the kind of adapter the spec asks for (names,
shapes, dtype, LoRA rank), finite, of plausible size and norm. Anything else would at best
crash composition and at worst let one owner swamp every coalition (a huge-norm adapter
dominates the summed log-probs), so it is rejected with a reason the report shows.
Near-duplicates are only *flagged*: two honest owners with the same public data may train
near-identical adapters, and deciding that is copying is a human's call.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AdapterLimits:
    """Bounds a valued adapter must respect (documented in docs/trust.md).

    Attributes:
        max_norm: largest allowed L2 norm of all tensors flattened together. Trained adapters of
            the embedded model are around 10; the default leaves two orders of magnitude of room.
        max_megabytes: largest allowed total size of the tensors.
        duplicate_cosine: cosine similarity of two owners' flattened adapters at or above which
            the pair is flagged as possible copying.
    """

    max_norm: float = 1000.0
    max_megabytes: float = 512.0
    duplicate_cosine: float = 0.99

    def __post_init__(self) -> None:
        if not (self.max_norm > 0 and self.max_megabytes > 0 and -1.0 <= self.duplicate_cosine <= 1.0):
            raise ValueError("adapter limits: max_norm and max_megabytes must be positive, "
                             "duplicate_cosine within [-1, 1]")


def _rank_mismatch(name: str, got: tuple[int, ...], want: tuple[int, ...]) -> int | None:
    """The rank ``got`` implies when it differs from ``want`` only in the LoRA rank dimension.

    PEFT stores ``lora_A`` as r × in and ``lora_B`` as out × r.
    """
    if len(got) != 2 or len(want) != 2:
        return None
    if "lora_A" in name and got[1] == want[1] and got[0] != want[0]:
        return got[0]
    if "lora_B" in name and got[0] == want[0] and got[1] != want[1]:
        return got[1]
    return None


def adapter_problem(tensors: Mapping[str, np.ndarray] | None, expected: Mapping[str, tuple[int, ...]],
                    rank: int, limits: AdapterLimits = AdapterLimits()) -> str | None:
    """Why ``tensors`` cannot be valued under a spec whose adapters have ``expected`` shapes, or None."""
    if not tensors:
        return "no adapter tensors received"
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        return f"adapter tensor names do not match the spec (missing {missing[:2]}, unexpected {extra[:2]})"
    total_bytes = sum(np.asarray(t).nbytes for t in tensors.values())
    if total_bytes > limits.max_megabytes * 2**20:
        return f"adapter is {total_bytes / 2**20:.1f} MiB, above the {limits.max_megabytes:g} MiB limit"
    for name, shape in expected.items():
        arr = np.asarray(tensors[name])
        if arr.dtype != np.float32:
            return f"tensor {name} has dtype {arr.dtype}, expected float32"
        if tuple(arr.shape) != tuple(shape):
            got = _rank_mismatch(name, tuple(arr.shape), tuple(shape))
            if got is not None:
                return f"tensor {name} has LoRA rank {got}, the spec asks for rank {rank}"
            return f"tensor {name} has shape {tuple(arr.shape)}, expected {tuple(shape)}"
        if not np.all(np.isfinite(arr)):
            return f"tensor {name} has non-finite values"
    norm = adapter_norm(tensors)
    if norm > limits.max_norm:
        return f"adapter norm {norm:.4g} is above the bound {limits.max_norm:g}"
    return None


def adapter_norm(tensors: Mapping[str, np.ndarray]) -> float:
    """L2 norm of every tensor flattened together (float64 accumulation)."""
    return float(np.sqrt(sum(float(np.sum(np.square(np.asarray(t, dtype=np.float64)))) for t in tensors.values())))


def _flat(tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(tensors[k], dtype=np.float64).ravel() for k in sorted(tensors)])


def near_duplicates(adapters: Mapping[str, Mapping[str, np.ndarray]], threshold: float) -> list[dict]:
    """Pairs of owners whose flattened adapters have cosine similarity ≥ ``threshold``.

    Returns ``[{"owners": [a, b], "cosine": c}]`` in owner order. Adapters of different
    layouts (which validation would already reject) are never compared.
    """
    flats = {name: _flat(t) for name, t in adapters.items()}
    flagged = []
    for a, b in itertools.combinations(adapters, 2):
        x, y = flats[a], flats[b]
        if x.shape != y.shape:
            continue
        denom = float(np.linalg.norm(x) * np.linalg.norm(y))
        cosine = float(x @ y / denom) if denom > 0 else (1.0 if not x.any() and not y.any() else 0.0)
        if cosine >= threshold:
            flagged.append({"owners": [a, b], "cosine": round(cosine, 6)})
    return flagged
