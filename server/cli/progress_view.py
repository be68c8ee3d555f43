"""Terminal view of a run's progress events: a bar for owners trained, lines for the rest."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressView:
    """Draws events from :mod:`common.storage.progress` on stderr while a run is under way."""

    def __init__(self, num_owners: int) -> None:
        self._bar = tqdm(total=num_owners, desc="owners trained", unit="owner", file=sys.stderr,
                         dynamic_ncols=True, leave=True, disable=None)  # no bar when not a terminal
        self._held = 0  # owners whose adapters the ledger held at the start: done before any training

    @property
    def owners_done(self) -> int:
        """Owners with an adapter so far: those the ledger held plus those trained in this run."""
        return int(self._bar.n)

    def show(self, event: dict) -> None:
        if event.get("stage") == "resume" and "held" in event:
            self._held = int(event["held"])
            self._bar.n = self._held
            self._bar.refresh()
        elif event.get("stage") == "train" and "done" in event:
            self._bar.n = self._held + int(event["done"])
            self._bar.refresh()
        tqdm.write(f"[{event.get('t', 0):7.1f}s] {event.get('stage', '?'):>10}: {event.get('message', '')}",
                   file=sys.stderr)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "ProgressView":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
