"""Progress events of a run, as JSON lines in the run directory.

The coordinator runs inside Flower's process tree, away from the user's terminal; it appends
one event per line to ``progress.jsonl`` and the CLI follows that file to draw progress. The
same events serve as a durable log of what happened.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from common.storage.private_files import create_private_file

PROGRESS_FILE = "progress.jsonl"


class ProgressLog:
    """Appends events ``{"t": seconds, "stage": ..., "message": ..., **fields}``."""

    def __init__(self, directory: str | Path, sink: Callable[[dict], object] | None = None) -> None:
        """``sink`` also receives every event (the coordinator's ledger, for live watchers)."""
        self.path = Path(directory) / PROGRESS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private_file(self.path)  # progress names owners and their errors: not for other users
        self._start = time.time()
        self._sink = sink

    def emit(self, stage: str, message: str, **fields) -> None:
        event = {"t": round(time.time() - self._start, 3), "stage": stage, "message": message, **fields}
        append_event(self.path, event)
        if self._sink is not None:
            self._sink(event)


def append_event(path: str | Path, event: dict) -> None:
    """Append one event as one line. Simulated owners append their training steps to the
    coordinator's file from other processes: a single ``write`` of one short line in append
    mode lands whole (POSIX ``O_APPEND``), so lines of several writers never interleave."""
    line = (json.dumps(event) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def follow(path: Path, offset: int) -> tuple[list[dict], int]:
    """Events appended to ``path`` since byte ``offset`` (complete lines only) and the new offset."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset
    events = []
    consumed = 0
    for line in chunk.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        consumed += len(line)
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events, offset + consumed


def read_all(path: Path) -> Iterator[dict]:
    events, _ = follow(path, 0)
    yield from events
