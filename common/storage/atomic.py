"""Atomic file writes: a reader sees the old file or the new one, never a part of either.

Every file FairPool writes that something later trusts (a job, a report, keys, an owner's
data, credentials) goes through here. The new content is written to a fresh temporary file
beside the target (same directory, so the rename is one filesystem operation), flushed to disk,
then renamed over the target. A crash or a full disk leaves the old file; a failed write
removes its temporary file.

``mode`` is given to ``os.open`` when the temporary file is created, so a private file is never,
even for an instant, readable by others, and then set exactly (the umask may have narrowed a
public file). Without a mode the file gets what a plain ``open`` would give it (0666 less the
umask).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = ["atomic_write", "atomic_writer", "temp_beside"]

_DEFAULT_MODE = 0o666


def temp_beside(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to a new temporary file beside ``path`` and return it (not yet renamed).

    For callers that commit several files together (a key pair): write every temporary file
    first, then rename them all.
    """
    target = Path(path)
    with _open_temp(target, mode) as (tmp, handle):
        handle.write(data)
    return tmp


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> Path:
    """Replace ``path`` with ``data`` atomically (see the module docstring); return ``path``."""
    target = Path(path)
    tmp = temp_beside(target, data, mode)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


@contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[TextIO]:
    """A UTF-8 text handle whose content replaces ``path`` only if the ``with`` block succeeds.

    For content written piece by piece (a dataset, row by row) rather than held whole.
    """
    target = Path(path)
    with _open_temp(target, mode) as (tmp, raw):
        text = open(raw.fileno(), "w", encoding="utf-8", newline="\n", closefd=False)
        try:
            yield text
        finally:
            text.flush()
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _open_temp(target: Path, mode: int | None) -> Iterator[tuple[Path, BinaryIO]]:
    """``(temporary path, binary handle)``; flushed and fsynced on success, removed on failure."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         _DEFAULT_MODE if mode is None else mode)
        except FileExistsError:
            continue
        break
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield tmp, handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
