"""Terminal view of a run's progress events: a bar for owners trained, lines for the rest."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressView:
    """Draws events from :mod:`common.storage.progress` on stderr while a run is under way."""

    def __init__(self, num_owners: int) -> None:
        self._bar = tqdm(total=num_owners, desc="owners trained", unit="owner", file=sys.stderr,
                         dynamic_ncols=True, leave=True, disable=None)  # no bar when not a terminal

    def show(self, event: dict) -> None:
        if event.get("stage") == "train" and "done" in event:
            self._bar.n = int(event["done"])
            self._bar.refresh()
        tqdm.write(f"[{event.get('t', 0):7.1f}s] {event.get('stage', '?'):>10}: {event.get('message', '')}",
                   file=sys.stderr)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "ProgressView":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
