"""Failpoints: named places where a test can make the process die or a step fail on purpose.

Crash safety cannot be shown by reading code; it has to be exercised. ``FAIRPOOL_FAILPOINTS``
holds comma-separated ``NAME[=ACTION][@N]`` items: at the N-th time (default 1st) the code
passes ``hit(NAME)``, ACTION happens — ``exit`` (default: ``os._exit(FAILPOINT_EXIT)``, like
``kill -9``: no cleanup, no flush), ``raise`` (RuntimeError), ``oserror`` (a transient
OSError), or ``hang`` (sleep for an hour). Unset, every ``hit`` is a dictionary lookup.
"""

from __future__ import annotations

import os
import time
from collections import Counter

ENV = "FAIRPOOL_FAILPOINTS"
FAILPOINT_EXIT = 86
_passes: Counter[str] = Counter()


def _parse(text: str) -> dict[str, tuple[str, int]]:
    points = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        spec, _, nth = item.partition("@")
        name, _, action = spec.partition("=")
        points[name.strip()] = (action.strip() or "exit", int(nth) if nth else 1)
    return points


def hit(name: str) -> None:
    """Trigger failpoint ``name`` if ``FAIRPOOL_FAILPOINTS`` arms it for this pass."""
    text = os.environ.get(ENV)
    if not text:
        return
    armed = _parse(text).get(name)
    if armed is None:
        return
    _passes[name] += 1
    action, nth = armed
    if _passes[name] != nth:
        return
    if action == "exit":
        os._exit(FAILPOINT_EXIT)
    if action == "raise":
        raise RuntimeError(f"failpoint {name}: injected failure")
    if action == "oserror":
        raise OSError(f"failpoint {name}: injected transient I/O error")
    if action == "hang":
        time.sleep(3600)
    raise ValueError(f"failpoint {name}: unknown action {action!r}")


def reset() -> None:
    """Forget pass counts (tests that arm the same failpoint twice in one process)."""
    _passes.clear()
