"""Every process a run starts is the run's: found by a tag, stopped together, even after ``kill -9``.

``flwr run`` starts a SuperLink, which starts the simulation, which starts Ray's daemons and
actors; several of them open sessions of their own, so no process group holds them all, and a
killed CLI used to leave 10–13 of them running — an orphaned coordinator even finished the run
and wrote its report. So the CLI puts a random tag in the environment of everything it starts
(children inherit it, whatever session they open), and:

* on every way out of a run — success, error, the owner timeout, SIGINT/SIGTERM/SIGHUP — it
  stops every process carrying the tag (SIGTERM, then SIGKILL after a grace period);
* a **watchdog** in its own session holds the read end of a pipe whose write end only the CLI
  holds. When the CLI dies by any means (``kill -9`` included) the kernel closes the pipe, the
  watchdog reads end-of-file and stops every tagged process within seconds, then exits.

Linux ``/proc`` is read to find tagged processes; elsewhere nothing is found, and cleanup falls
back to the process group and the SuperLink shutdown in :mod:`server.federation`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

RUN_TAG_VAR = "FAIRPOOL_RUN_TAG"
GRACE_S = 5.0


def new_tag() -> str:
    return uuid.uuid4().hex


def tagged_pids(tag: str) -> list[int]:
    """PIDs of live processes whose environment carries ``RUN_TAG_VAR=tag`` (never this process)."""
    needle = f"{RUN_TAG_VAR}={tag}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return [pid for pid in found if pid != os.getpid() and not _zombie(pid)]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stop_tagged(tag: str, grace_s: float = GRACE_S, quiet_s: float = 1.5, limit_s: float = 20.0) -> list[int]:
    """SIGTERM every tagged process, SIGKILL what is left after ``grace_s``; returns what was found.

    Processes can still be starting while the run is stopped (Ray's raylet launches its dashboard
    agent late, and a process being exec'd briefly shows no environment), so stopping goes on
    until no tagged process has been seen for ``quiet_s`` — at most ``limit_s`` after the grace.
    """
    found = tagged_pids(tag)
    _signal_all(found, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and tagged_pids(tag):
        time.sleep(0.1)
    quiet_since = None
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        left = tagged_pids(tag)
        if left:
            found += [pid for pid in left if pid not in found]
            _signal_all(left, signal.SIGKILL)
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
        time.sleep(0.1)
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Watchdog:
    """A process in its own session that stops the run's processes when this process dies."""

    def __init__(self, tag: str) -> None:
        read_end, self._write_end = os.pipe()
        env = {k: v for k, v in os.environ.items() if k != RUN_TAG_VAR}
        self.process = subprocess.Popen([sys.executable, "-m", "server.process_owner", tag], stdin=read_end,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                        start_new_session=True, close_fds=True)
        os.close(read_end)

    def release(self) -> None:
        """The run ended in order: let the watchdog go (it finds nothing left to stop)."""
        if self._write_end >= 0:
            os.close(self._write_end)
            self._write_end = -1
        try:
            self.process.wait(timeout=GRACE_S * 3)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Interrupted(BaseException):
    """SIGTERM or SIGHUP reached the CLI: unwind (so every ``finally`` stops its processes), then exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_on_termination() -> None:
    """Turn SIGTERM and SIGHUP into :class:`Interrupted` (SIGINT already raises KeyboardInterrupt)."""
    def handler(signum, _frame):
        raise Interrupted(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def _watch(tag: str) -> None:
    """The watchdog's body: wait for end-of-file on stdin (the CLI is gone, or done), then clean up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is the CLI's to handle
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    stop_tagged(tag, grace_s=3.0)


if __name__ == "__main__":
    _watch(sys.argv[1])
