"""Every process a run starts is the run's (issue 12 #2, #3): tagged processes are stopped on
every way out, and by the watchdog when the CLI itself is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from server.federation.process_owner import RUN_TAG_VAR, new_tag, stop_tagged, tagged_pids

ROOT = Path(__file__).resolve().parents[1]

# A stand-in CLI: starts a watchdog and two tagged grandchildren in sessions of their own (as
# Flower's SuperLink and Ray do), prints their pids, then waits to be killed.
CLI = r"""
import os, subprocess, sys, time
sys.path.insert(0, {root!r})
from server.federation.process_owner import RUN_TAG_VAR, Watchdog
tag = sys.argv[1]
watchdog = Watchdog(tag)
env = {{**os.environ, RUN_TAG_VAR: tag}}
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env, start_new_session=True)
        for _ in range(2)]
print(" ".join(str(k.pid) for k in kids), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _until_tagged(tag: str, pids: list[int], within_s: float = 10.0) -> list[int]:
    """The tagged pids once ``pids`` all show the tag: a process still being exec'd shows no
    environment for a moment (more so on a loaded machine), so a single look can miss it."""
    deadline = time.monotonic() + within_s
    while sorted(tagged_pids(tag)) != sorted(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(tagged_pids(tag))


def test_the_watchdog_stops_the_run_when_the_cli_is_killed(tmp_path):
    tag = new_tag()
    cli = subprocess.Popen([sys.executable, "-c", CLI.format(root=str(ROOT)), tag], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        kids = [int(p) for p in cli.stdout.readline().split()]
        assert len(kids) == 2 and all(_alive(p) for p in kids)
        assert _until_tagged(tag, kids) == sorted(kids)
        os.killpg(cli.pid, signal.SIGKILL)  # the CLI's whole group; the children are in other sessions
        cli.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in kids), "the watchdog must stop the run's processes"
        assert tagged_pids(tag) == []
    finally:
        if cli.poll() is None:
            cli.kill()
        stop_tagged(tag, grace_s=1)


def test_stop_tagged_ends_processes_that_ignore_sigterm():
    tag = new_tag()
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"],
                                env={**os.environ, RUN_TAG_VAR: tag}, stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"
    started = time.monotonic()
    assert stop_tagged(tag, grace_s=1) == [stubborn.pid]
    assert stubborn.wait(5) == -signal.SIGKILL and time.monotonic() - started < 5
    assert tagged_pids(tag) == []


# A tagged parent (the raylet's part) starting a child whose environment does not show the tag (as
# Ray's agents, whose process title overwrites what /proc/PID/environ shows), then dying first.
UNTAGGED_CHILD = r"""
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "time.sleep(120)"], env={"PATH": os.environ.get("PATH", "")}, start_new_session=True)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_descendants_are_the_runs_even_when_their_environment_lost_the_tag():
    """Issue 12 #3 (the flake): Ray's dashboard and runtime-env agents survived the owner timeout,
    re-parented to init, because their environment no longer showed the tag."""
    tag = new_tag()
    parent = subprocess.Popen([sys.executable, "-c", UNTAGGED_CHILD], env={**os.environ, RUN_TAG_VAR: tag},
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert f"{RUN_TAG_VAR}={tag}".encode() not in Path(f"/proc/{child}/environ").read_bytes()
        assert sorted(tagged_pids(tag)) == sorted([parent.pid, child])
        found = stop_tagged(tag, grace_s=1)
        assert sorted(found) == sorted([parent.pid, child])
        parent.wait(5)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the untagged child ignored SIGTERM and outlived its parent: it must be killed"
    finally:
        parent.kill()
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_released_watchdog_still_sweeps_what_the_run_left_and_then_exits():
    """After a run ends in order the CLI releases its watchdog: it makes one last sweep (a
    straggler is stopped) instead of waiting for a quiet period, and exits."""
    from server.federation.process_owner import Watchdog

    tag = new_tag()
    watchdog = Watchdog(tag)
    straggler = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                 env={**os.environ, RUN_TAG_VAR: tag}, start_new_session=True)
    try:
        assert _until_tagged(tag, [straggler.pid]) == [straggler.pid]
        watchdog.release()
        assert watchdog.process.returncode == 0, "the watchdog exits by itself once released"
        assert straggler.wait(10) == -signal.SIGTERM
        assert tagged_pids(tag) == []
    finally:
        if straggler.poll() is None:
            straggler.kill()
