"""Issue 12 #11: key directories, the ledger and progress files are private whatever the umask."""

from __future__ import annotations

import os
import stat

import pytest


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_key_directories_are_0700_under_umask_000(tmp_path, open_umask):
    from common.trust.sealing import generate_storage_key
    from common.trust.signing import generate_private_key, save_keypair

    save_keypair(generate_private_key(), tmp_path / "out" / "keys" / "owners", "acme")
    assert _mode(tmp_path / "out" / "keys") == 0o700
    assert _mode(tmp_path / "out" / "keys" / "owners") == 0o700
    assert _mode(tmp_path / "out" / "keys" / "owners" / "acme.key") == 0o600
    generate_storage_key(tmp_path / "store" / "storage.key")
    assert _mode(tmp_path / "store") == 0o700 and _mode(tmp_path / "store" / "storage.key") == 0o600


def test_existing_folders_keep_their_mode(tmp_path, open_umask):
    from common.storage.private_files import make_private_dir

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    make_private_dir(shared / "keys")
    assert _mode(shared) == 0o755 and _mode(shared / "keys") == 0o700


def test_ledger_and_progress_are_0600_under_umask_000(tmp_path, open_umask):
    from common.storage.progress import ProgressLog
    from server.federation.ledger import Ledger

    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.start_run("r1", "{}")
        for suffix in ("", "-wal", "-shm"):
            path = tmp_path / f"ledger.sqlite{suffix}"
            if path.exists():
                assert _mode(path) == 0o600, suffix
    log = ProgressLog(tmp_path)
    log.emit("start", "hello")
    assert _mode(tmp_path / "progress.jsonl") == 0o600
