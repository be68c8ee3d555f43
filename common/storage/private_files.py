"""Files and folders only their owner may read: keys, the ledger, progress logs.

Modes are set explicitly rather than left to the umask: under ``umask 000`` a plain ``mkdir``
gives a key directory mode 0777 and a plain ``open`` a world-readable ledger, whose rows name
every owner's adapter digest and stored utilities. ``chmod`` after creation closes that, and a
file is created 0600 from its first byte (``os.open``), so there is no window in which it is
readable by others.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and missing parents) with mode 0700; an existing folder is left as it is.

    Only folders this call creates are restricted: a user's own existing directory (their home,
    a shared volume) keeps the mode they gave it.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    for created in missing:
        os.chmod(created, DIR_MODE)
    return path


def create_private_file(path: str | os.PathLike) -> Path:
    """Make sure ``path`` exists with mode 0600 (created empty if missing, restricted if not)."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    os.close(fd)
    os.chmod(path, FILE_MODE)
    return path
