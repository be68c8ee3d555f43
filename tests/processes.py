"""Processes of one test's run, found by the ``FAIRPOOL_TEST_MARK`` each test puts in the
environment of what it starts: every child inherits it, and other tests' processes (pytest may
run several at once) do not carry it."""

from __future__ import annotations

import time
from pathlib import Path


def assert_all_gone_within(mark: str, seconds: float, settle_s: float = 2.0) -> None:
    """Every process carrying ``FAIRPOOL_TEST_MARK=mark`` is gone within ``seconds``, and none
    has appeared ``settle_s`` later (no orphan restarts the run)."""
    deadline = time.monotonic() + seconds
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not marked_processes(mark), "a process of the run survived"
    time.sleep(settle_s)
    assert not marked_processes(mark), "a process of the run appeared after it was stopped"


def marked_processes(mark: str) -> list[str]:
    """Live processes whose environment carries ``FAIRPOOL_TEST_MARK=mark``, described for the failure message."""
    import psutil

    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            if f"FAIRPOOL_TEST_MARK={mark}".encode() in environ:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                if state != "Z":
                    proc = psutil.Process(int(entry.name))
                    tagged = any(v.startswith(b"FAIRPOOL_RUN_TAG=") for v in environ)
                    found.append(f"{cmdline[:80]} (pid {proc.pid}, parent {proc.ppid()}, state {state}, "
                                 f"started {time.time() - proc.create_time():.1f}s ago, run tag {tagged})")
        except (OSError, IndexError, psutil.Error):
            continue
    return found
