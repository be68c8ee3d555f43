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
back to the process group and the SuperLink shutdown in :mod:`server.federation.simulation`.
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
RELEASED = b"released"
"""What the CLI writes to the watchdog's pipe before closing it when the run ended in order."""


def new_tag() -> str:
    return uuid.uuid4().hex


def tagged_pids(tag: str) -> list[int]:
    """PIDs of the run's live processes (never this process): every process whose environment
    carries ``RUN_TAG_VAR=tag``, and every descendant of one.

    Descendants count because the environment is not a reliable mark on its own: Ray's agents
    rewrite their process title over the memory that ``/proc/PID/environ`` shows, and whether the
    tag survives depends on where their launcher placed it. Their parent, the raylet, is tagged.
    """
    return sorted(_run_processes(tag))


def _run_processes(tag: str) -> dict[int, int]:
    """``{pid: start time}`` of the run's live processes (see :func:`tagged_pids`)."""
    needle = f"{RUN_TAG_VAR}={tag}".encode()
    table: dict[int, tuple[int, int]] = {}  # pid -> (parent pid, start time), live processes only
    roots = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            pid = int(entry.name)
            stat = _stat_fields(pid)
            if stat is None or stat[0] == "Z":
                continue
            table[pid] = (int(stat[1]), int(stat[19]))
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                roots.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for pid, (parent, _start) in table.items():
        children.setdefault(parent, []).append(pid)
    found, stack = set(), list(roots)
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    found.discard(os.getpid())
    return {pid: table[pid][1] for pid in found}


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name: state, parent pid, …, start time (index 19)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: int) -> bool:
    """``pid`` is still the process that started at ``start`` (not a recycled pid) and not a zombie."""
    stat = _stat_fields(pid)
    return stat is not None and stat[0] != "Z" and int(stat[19]) == start


def stop_tagged(tag: str, grace_s: float = GRACE_S, quiet_s: float = 1.5, limit_s: float = 20.0) -> list[int]:
    """SIGTERM the run's processes, SIGKILL what is left after ``grace_s``; returns what was found.

    Every process found once stays wanted until it is gone, even after its tagged parent died
    and it was re-parented. Processes can still be starting while the run is stopped (a process
    being exec'd briefly shows no environment), so stopping goes on until no process of the run
    has been seen for ``quiet_s`` — at most ``limit_s`` after the grace.
    """
    found = _run_processes(tag)
    _signal_all(list(found), signal.SIGTERM)

    def left() -> list[int]:
        found.update({pid: start for pid, start in _run_processes(tag).items() if pid not in found})
        return [pid for pid, start in found.items() if _alive(pid, start)]

    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and left():
        time.sleep(0.1)
    quiet_since = None
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        alive = left()
        if alive:
            _signal_all(alive, signal.SIGKILL)
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
        time.sleep(0.1)
    return sorted(found)


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
        self.process = subprocess.Popen([sys.executable, "-m", "server.federation.process_owner", tag], stdin=read_end,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                        start_new_session=True, close_fds=True)
        os.close(read_end)

    def release(self) -> None:
        """The run ended in order and its processes were stopped: let the watchdog go after one
        last sweep (:data:`RELEASED` tells it so; a bare end-of-file means the CLI died)."""
        if self._write_end >= 0:
            try:
                os.write(self._write_end, RELEASED)
            except OSError:  # the watchdog is gone already
                pass
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
    received = b""
    try:
        while chunk := os.read(0, 4096):
            received += chunk
    except OSError:
        pass
    # Released: the CLI stopped the run itself, so one sweep for stragglers is enough; otherwise
    # go on until nothing of the run has been seen for a while (processes may still be starting).
    stop_tagged(tag, grace_s=3.0, **({"quiet_s": 0.0} if received.endswith(RELEASED) else {}))


if __name__ == "__main__":
    _watch(sys.argv[1])
