"""Where FairPool keeps its caches (built base models, markets, run directories).

One place decides the location so every command and test agrees on it; tests and CI point
``FAIRPOOL_HOME`` at a temporary or per-checkout directory to stay hermetic.
"""

from __future__ import annotations

import os
from pathlib import Path


def fairpool_home() -> Path:
    """Return ``$FAIRPOOL_HOME``, else ``$XDG_CACHE_HOME/fairpool``, else ``~/.cache/fairpool``."""
    explicit = os.environ.get("FAIRPOOL_HOME")
    if explicit:
        return Path(explicit).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(cache) / "fairpool").resolve()
