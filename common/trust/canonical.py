"""The one canonical JSON encoding: what is signed, MACed or hashed is encoded here and nowhere else.

Sorted keys, no whitespace, UTF-8, finite numbers only. Python writes floats with the shortest
repr that reads back to the same float, so these bytes are identical before and after a
``json.dumps``/``json.loads`` round trip: a report keeps verifying after it was written to disk
and read back, and a spec digested by an owner equals the one the coordinator computes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "json_sha256"]


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes of ``obj``; ``ValueError`` for NaN or infinity (not JSON)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def json_sha256(obj: Any) -> str:
    """SHA-256 hex digest of :func:`canonical_json`: a content key for specs, games and results.

    Same content ⇒ same key in any process, so ledgers and signatures can rely on it.
    """
    return hashlib.sha256(canonical_json(obj)).hexdigest()
