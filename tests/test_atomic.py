"""``common/storage/atomic.py``: the one atomic-write helper (issue 13)."""

from __future__ import annotations

import os
import stat

import pytest

from common.storage.atomic import atomic_write, atomic_writer, temp_beside


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    def set_umask(value: int) -> None:
        os.umask(value)

    old = os.umask(0o022)
    os.umask(old)
    yield set_umask
    os.umask(old)


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.json"
    path.write_bytes(b"old")
    assert atomic_write(path, b"new") == path
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


@pytest.mark.parametrize("umask_value", [0o000, 0o022, 0o077])
def test_an_explicit_mode_is_exact_whatever_the_umask(tmp_path, umask, umask_value):
    umask(umask_value)
    private = atomic_write(tmp_path / "key", b"secret", 0o600)
    public = atomic_write(tmp_path / "report", b"{}", 0o644)
    assert (_mode(private), _mode(public)) == (0o600, 0o644)


def test_without_a_mode_the_umask_decides_like_a_plain_open(tmp_path, umask):
    umask(0o027)
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    assert _mode(atomic_write(tmp_path / "atomic", b"x")) == _mode(plain) == 0o640


def test_a_failing_writer_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_writer(path) as out:
            out.write("half a ")
            raise RuntimeError("disk full")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]
    with atomic_writer(path) as out:
        out.write("é\n")
    assert path.read_bytes() == "é\n".encode()


def test_temp_beside_is_not_yet_the_file(tmp_path):
    path = tmp_path / "a.key"
    tmp = temp_beside(path, b"k", 0o600)
    assert tmp.parent == tmp_path and tmp.name.startswith(".a.key.") and not path.exists()
    assert tmp.read_bytes() == b"k" and _mode(tmp) == 0o600
    os.replace(tmp, path)
    assert path.read_bytes() == b"k"


def test_a_missing_directory_is_an_os_error_with_nothing_written(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "f", b"x")
    assert list(tmp_path.iterdir()) == []
