"""One run per output: an exclusive, non-blocking lock held for the whole run.

Two ``fairpool value`` commands on the same ``--out`` used to run the same run id side by side
(every owner trained twice, progress interleaved), and a coordinator orphaned by a killed CLI
could share the ledger with the next one. ``flock`` on a lock file settles both: the kernel
releases it when the holder exits however it exits (``kill -9`` included), so a stale lock
never blocks a re-run, and a live holder is refused at once with its pid named.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from common.errors import ConfigError


class LockHeld(ConfigError):
    """Another live process holds the lock (a user-facing error: exit 2, nothing written)."""


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (created 0600) for the ``with`` block, or raise :class:`LockHeld`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise LockHeld(f"{what} is in use by another FairPool run (pid {holder}); wait for it to end, "
                           "or choose another `out_dir`") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def holder_alive(path: str | os.PathLike) -> bool | None:
    """Whether the process that last took the lock at ``path`` is still alive.

    ``None`` when there is no lock file (a ledger written before locks existed, or by a test):
    then nothing can be said. The pid is the one :func:`exclusive_lock` wrote; a process that
    took the lock and died leaves its pid behind, which no longer names a live process.
    """
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
