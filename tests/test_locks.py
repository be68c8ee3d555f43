"""Issue 12 #4: one run per output. A second command on a busy --out gets one line and exit 2 at
once; a second coordinator on a busy ledger touches nothing; a dead holder never blocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.storage.locks import LockHeld, exclusive_lock
from server.cli.main import OUT_LOCK, main

ROOT = Path(__file__).resolve().parents[1]
GOOD = '{"prompt": "Describe the park.", "chosen": " It is calm.", "rejected": " It is noisy."}\n'


def test_second_command_on_a_busy_out_is_refused_at_once(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text(GOOD * 3)
    out = tmp_path / "out"
    with exclusive_lock(out / OUT_LOCK, "test holder"):
        started = time.monotonic()
        code = main(["value", "--owner", f"a={good}", "--eval", str(good), "--out", str(out)])
        elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"--out {out} is in use by another FairPool run (pid {os.getpid()})" in err[0]
    assert elapsed < 30  # refused before any Flower process starts
    assert sorted(p.name for p in out.iterdir()) == [OUT_LOCK], "nothing else written"


def test_lock_is_released_when_its_holder_dies(tmp_path):
    path = tmp_path / "lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from common.storage.locks import exclusive_lock\n"
        "with exclusive_lock(%r, 'x'):\n    print('held', flush=True); time.sleep(60)\n") % (str(ROOT), str(path))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {holder.pid}"):
            with exclusive_lock(path, "x"):
                pass
        holder.kill()
        holder.wait(10)
        with exclusive_lock(path, "x"):  # kill -9 of the holder left nothing stale
            pass
    finally:
        if holder.poll() is None:
            holder.kill()


def test_second_coordinator_on_a_busy_ledger_touches_nothing(tmp_path):
    from common.config.job import OwnerEntry, ValuationJob
    from common.config.spec import TrainingSpec
    from server.federation.run import ERROR_FILE, LEDGER_FILE, LEDGER_LOCK, run_job

    job = ValuationJob(run_id="r1", owners=(OwnerEntry("a", "x.jsonl"),), eval_path="e.jsonl",
                       out_dir=str(tmp_path), spec=TrainingSpec(base_model="-"))
    called = []
    with exclusive_lock(tmp_path / LEDGER_LOCK, "test holder"):
        assert run_job(job, lambda *a: called.append(a) or {}) is None
    assert not called and not (tmp_path / LEDGER_FILE).exists()
    assert "is in use by another FairPool run" in json.loads((tmp_path / ERROR_FILE).read_text())["error"]
