"""Terminal view of a run's progress events: a bar for owners trained, a bar per owner while it
trains (step, loss, ETA), lines for the rest.

Off a terminal (a log file, CI) there are no bars: every event is one line, and owners'
training steps arrive every few seconds (:func:`client.trainer.step_reporter`).
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class ProgressView:
    """Draws events from :mod:`common.storage.progress` on stderr while a run is under way."""

    def __init__(self, num_owners: int) -> None:
        self._bar = tqdm(total=num_owners, desc="owners trained", unit="owner", file=sys.stderr,
                         dynamic_ncols=True, leave=True, disable=None)  # no bar when not a terminal
        self._held = 0  # owners whose adapters the ledger held at the start: done before any training
        self._owners: dict[str, tqdm] = {}
        self._started = time.monotonic()
        self.last_step: dict[str, dict] = {}
        """The latest training step each owner reported (for callers and tests)."""

    @property
    def owners_done(self) -> int:
        """Owners with an adapter so far: those the ledger held plus those trained in this run."""
        return int(self._bar.n)

    def show(self, event: dict) -> None:
        stage = event.get("stage")
        if stage == "resume" and "held" in event:
            self._held = int(event["held"])
            self._bar.n = self._held
            self._bar.refresh()
        elif stage == "train" and "done" in event:
            self._bar.n = self._held + int(event["done"])
            self._bar.refresh()
            if event.get("owner") in self._owners:
                self._owners.pop(event["owner"]).close()
        elif stage == "owner" and "step" in event:
            self._owner_step(event)
            if not self._bar.disable:
                return  # drawn as the owner's bar, not as a line
        # Owners' events come from other processes, with no clock of the coordinator's: shown
        # at the time they are drawn.
        t = event.get("t", time.monotonic() - self._started)
        tqdm.write(f"[{t:7.1f}s] {stage or '?':>10}: {event.get('message', '')}", file=sys.stderr)

    def _owner_step(self, event: dict) -> None:
        owner = str(event.get("owner", "?"))
        self.last_step[owner] = event
        if self._bar.disable:
            return
        bar = self._owners.get(owner)
        if bar is None:
            bar = self._owners[owner] = tqdm(total=int(event.get("steps") or 0), desc=f"  {owner}", unit="step",
                                             file=sys.stderr, dynamic_ncols=True, leave=False,
                                             position=len(self._owners) + 1)
        bar.n = int(event["step"])
        bar.set_postfix(loss=f"{event.get('loss', float('nan')):.4f}", eta=f"{event.get('eta_s', 0):.0f}s",
                        refresh=True)

    def close(self) -> None:
        for bar in self._owners.values():
            bar.close()
        self._owners.clear()
        self._bar.close()

    def __enter__(self) -> "ProgressView":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
