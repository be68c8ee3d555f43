"""Content digests of tensor collections (adapters, base models).

A digest covers names, dtypes, shapes and bytes in a canonical order, so two parties that hold
the same tensors compute the same hex string whatever order the tensors travelled in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np


def tensors_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over ``(name, dtype, shape, little-endian bytes)`` of every tensor, by name."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        h.update(name.encode("utf-8"))
        h.update(b"\0" + str(arr.dtype).encode() + b"\0" + repr(tuple(arr.shape)).encode() + b"\0")
        h.update(arr.tobytes())
    return h.hexdigest()
