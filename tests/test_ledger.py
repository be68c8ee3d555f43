"""The coordinator's SQLite ledger (server/federation/ledger.py): what goes in comes back out, and
a row altered behind the ledger's back is refused (docs/trust.md, "What the ledger authenticates").

Rows are written through :class:`Ledger`; tampering goes through :mod:`sqlite3` directly, as an
attacker with the file would. No model, no Flower: random tensors stand in for adapters.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import stat

import numpy as np
import pytest

from common.trust.sealing import (
    generate_storage_key,
    ledger_mac_key,
    load_storage_key,
    seal,
    tensors_from_bytes,
    tensors_to_bytes,
    unseal,
)
from server.federation.ledger import Ledger, LedgerTampered

JOB = json.dumps({"run_id": "r1", "owners": ["a", "b"]})
REPORT = {"run_id": "r1", "payout": {"shares": {"a": 0.45, "b": 0.55}}}


@pytest.fixture
def mac_key(tmp_path):
    return ledger_mac_key(load_storage_key(generate_storage_key(tmp_path / "keys" / "storage.key")))


@pytest.fixture
def path(tmp_path):
    return tmp_path / "out" / "ledger.sqlite"


def _sql(path, script):
    """Run ``script`` (one or more statements) on the file directly; the number of rows changed."""
    db = sqlite3.connect(path)
    try:
        db.executescript(script)
        return db.total_changes
    finally:
        db.close()


def _meta(digest, **extra):
    return {"nonce": "n", "adapter_sha256": digest, "signature": "sig", "num_examples": 7, **extra}


# --------------------------------------------------------------------------- reading back what was written


def test_run_lifecycle(path, mac_key):
    with Ledger(path, mac_key) as ledger:
        assert ledger.run("r1") is None and ledger.run_job("r1") is None
        ledger.start_run("r1", JOB)
        row = ledger.run("r1")
        assert (row["status"], row["report"], row["failure"]) == ("running", None, None)
        assert ledger.run_job("r1") == JOB
        ledger.finish_run("r1", "failed", failure="owner b: no reply")
        assert ledger.run("r1")["status"] == "failed" and ledger.run("r1")["failure"] == "owner b: no reply"
        ledger.start_run("r1", JOB)  # a re-run of an unfinished run is running again
        assert ledger.run("r1")["status"] == "running"
        ledger.finish_run("r1", "done", REPORT)
        done = ledger.run("r1")
        assert (done["status"], done["report"], done["failure"]) == ("done", REPORT, None)
        # a finished run keeps its published report and status through a re-run and a later failure
        ledger.start_run("r1", JOB)
        ledger.finish_run("r1", "interrupted", failure="SIGTERM")
        again = ledger.run("r1")
        assert (again["status"], again["report"], again["failure"]) == ("done", REPORT, "SIGTERM")
        assert ledger.run_job("r1") == JOB


def test_runs_are_listed_newest_first_without_reports(path, mac_key, monkeypatch):
    import server.federation.ledger as module

    clock = iter([100.0, 300.0, 200.0])
    monkeypatch.setattr(module.time, "time", lambda: next(clock))
    with Ledger(path, mac_key) as ledger:
        for run_id in ("old", "new", "middle"):
            ledger.start_run(run_id, "{}")
        ledger.finish_run("new", "done", {"x": 1})
        assert ledger.runs() == [{"run_id": "new", "created_at": 300.0, "status": "done"},
                                 {"run_id": "middle", "created_at": 200.0, "status": "running"},
                                 {"run_id": "old", "created_at": 100.0, "status": "running"}]


def test_owners_expected_then_settled(path, mac_key):
    with Ledger(path, mac_key) as ledger:
        ledger.expect_owners("r1", {"b": "key-b", "a": "key-a"})
        assert ledger.owners("r1") == [{"name": "a", "public_key": "key-a", "status": "expected", "reason": None},
                                       {"name": "b", "public_key": "key-b", "status": "expected", "reason": None}]
        ledger.settle_owner("r1", "b", "rejected", "bad signature")
        ledger.expect_owners("r1", {"a": "key-a", "b": "key-b"})  # a resumed run: existing rows keep their status
        ledger.settle_owner("r1", "a", "valued", None)
        assert ledger.owners("r1") == [{"name": "a", "public_key": "key-a", "status": "valued", "reason": None},
                                       {"name": "b", "public_key": "key-b", "status": "rejected",
                                        "reason": "bad signature"}]
        assert ledger.owners("other") == []


def test_nonces_are_used_once_by_their_own_run(path, mac_key):
    with Ledger(path, mac_key) as ledger:
        ledger.issue_nonce("r1", "n1")
        ledger.issue_nonce("r2", "n2")
        assert ledger.use_nonce("r1", "n2") == "replay: the reply's nonce belongs to run r2"
        assert ledger.use_nonce("r1", "n1") is None
        assert ledger.use_nonce("r1", "n1") == "replay: the reply's nonce was already used"
        assert ledger.use_nonce("r1", "nope") == "replay: the reply's nonce was never issued by this coordinator"
        assert ledger.use_nonce("r2", "n2") is None  # refusing it to r1 did not use it up


def test_submissions_and_sealed_adapters(path, mac_key, tmp_path):
    key = load_storage_key(tmp_path / "keys" / "storage.key")
    rng = np.random.default_rng(0)
    tensors = {"lora_A": rng.normal(size=(4, 8)).astype(np.float32), "lora_B": rng.normal(size=(8, 4)).astype(np.float32)}
    blob = seal(key, tensors_to_bytes(tensors), "ctx-a")
    with Ledger(path, mac_key) as ledger:
        ledger.record_submission("r1", "b", status="rejected", reason="adapter norm too large", meta=_meta("d-b"))
        ledger.record_submission("r1", "a", status="accepted", reason=None, meta=_meta("d-a", metrics={"loss": 0.5}),
                                 sealed=blob)
        ledger.record_submission("r1", "c", status="missing", reason="no reply within 5s", meta={})
        ledger.record_submission("r2", "a", status="accepted", reason=None, meta=_meta("d-other"), sealed=b"other")
        subs = ledger.submissions("r1")
        assert [(s["owner"], s["status"], s["reason"]) for s in subs] == [
            ("b", "rejected", "adapter norm too large"), ("a", "accepted", None), ("c", "missing", "no reply within 5s")]
        assert subs[1]["meta"] == _meta("d-a", metrics={"loss": 0.5})
        assert [s["received_at"] for s in subs] == sorted(s["received_at"] for s in subs)
        stored = ledger.stored_adapters("r1")
        assert list(stored) == ["a"], "only accepted submissions have adapters"
        digest, sealed, meta = stored["a"]
        assert digest == "d-a" and sealed == blob and meta == _meta("d-a", metrics={"loss": 0.5})
        back = tensors_from_bytes(unseal(key, sealed, "ctx-a"))
        assert sorted(back) == sorted(tensors) and all(np.array_equal(back[k], tensors[k]) for k in tensors)
        assert list(ledger.stored_adapters("r2")) == ["a"] and ledger.stored_adapters("r2")["a"][0] == "d-other"
    raw = path.read_bytes() + (path.with_name(path.name + "-wal").read_bytes()
                               if path.with_name(path.name + "-wal").exists() else b"")
    assert tensors["lora_A"].tobytes()[:32] not in raw, "adapters are stored sealed, not in the clear"


def test_results_utilities_and_events(path, mac_key):
    with Ledger(path, mac_key) as ledger:
        assert ledger.result("r1", "game:preference") is None
        ledger.save_result("r1", "game:preference", b'{"shapley": 0.45}')
        ledger.save_result("r1", "game:preference", b'{"shapley": 0.5}')  # replaced, not duplicated
        assert ledger.result("r1", "game:preference") == b'{"shapley": 0.5}'
        assert ledger.result("r2", "game:preference") is None
        # more masks than one SQLite statement may bind (500 per chunk)
        rng = np.random.default_rng(1)
        values = {int(m): float(v) for m, v in zip(rng.permutation(1 << 11)[:1200], rng.normal(size=1200))}
        ledger.save_utilities("g1", values)
        ledger.save_utilities("g2", {0: 0.5})
        asked = np.array(sorted(values) + [1 << 12, 1 << 13])  # two never stored
        assert ledger.load_utilities("g1", asked) == values
        assert ledger.utility_count("g1") == 1200 and ledger.utility_count("g2") == 1
        assert ledger.load_utilities("g2", np.array([0, 1])) == {0: 0.5}
        assert [ledger.add_event("r1", {"kind": k}) for k in ("start", "train", "done")] == [1, 2, 3]
        assert ledger.add_event("r2", {"kind": "start"}) == 1
        assert ledger.events("r1", after_seq=1) == [(2, {"kind": "train"}), (3, {"kind": "done"})]


def test_another_connection_sees_every_committed_write(path, mac_key):
    """Every write is its own transaction: a second process (here a second connection) reads it at once."""
    with Ledger(path, mac_key) as writer, Ledger(path, mac_key) as reader:
        writer.start_run("r1", JOB)
        writer.save_utilities("g", {3: 0.75})
        assert reader.run_job("r1") == JOB and reader.load_utilities("g", np.array([3])) == {3: 0.75}
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()


def test_the_ledger_file_is_private_whatever_the_umask(path, mac_key):
    old = os.umask(0)
    try:
        with Ledger(path, mac_key) as ledger:
            ledger.start_run("r1", JOB)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- row authentication


def _filled(path, mac_key):
    with Ledger(path, mac_key) as ledger:
        ledger.start_run("r1", JOB)
        ledger.finish_run("r1", "done", REPORT)
        ledger.expect_owners("r1", {"a": "key-a", "b": "key-b"})
        ledger.settle_owner("r1", "a", "valued", None)
        ledger.record_submission("r1", "b", status="rejected", reason="bad signature", meta=_meta("d-b"))
        ledger.record_submission("r1", "a", status="accepted", reason=None, meta=_meta("d-a"), sealed=b"blob")
        ledger.save_result("r1", "game", b'{"a": 0.45}')
        ledger.save_result("r1", "other", b'{"a": 0.1}')
        ledger.save_utilities("g", {1: 0.25, 3: 0.75})


def _reads(ledger):
    """Every read that a resume trusts, by table."""
    return {
        "runs": lambda: ledger.run("r1"),
        "runs_job": lambda: ledger.run_job("r1"),
        "owners": lambda: ledger.owners("r1"),
        "submissions": lambda: ledger.submissions("r1"),
        "adapters": lambda: ledger.stored_adapters("r1"),
        "results": lambda: ledger.result("r1", "game"),
        "utilities": lambda: ledger.load_utilities("g", np.array([1, 3])),
    }


def test_an_untouched_ledger_reads_back_under_its_key(path, mac_key):
    _filled(path, mac_key)
    with Ledger(path, mac_key) as ledger:
        assert ledger.run("r1")["report"] == REPORT
        assert ledger.result("r1", "game") == b'{"a": 0.45}'
        assert ledger.load_utilities("g", np.array([1, 3])) == {1: 0.25, 3: 0.75}
        assert ledger.owners("r1")[0]["status"] == "valued"
        assert list(ledger.stored_adapters("r1")) == ["a"]


def test_the_mac_is_hmac_sha256_under_a_key_derived_from_the_storage_key(path, mac_key, tmp_path):
    """An independent recomputation: HMAC-SHA256, keyed by HKDF(storage key), over [table, *fields] as compact JSON."""
    storage_key = load_storage_key(tmp_path / "keys" / "storage.key")
    assert mac_key != storage_key and len(mac_key) == 32
    _filled(path, mac_key)

    def expected(*fields):
        payload = json.dumps(list(fields), separators=(",", ":"), ensure_ascii=False).encode()
        return hmac.new(mac_key, payload, hashlib.sha256).hexdigest()

    with sqlite3.connect(path) as db:
        (mac,) = db.execute("SELECT mac FROM utilities WHERE game_key='g' AND mask=1").fetchone()
        assert mac == expected("utilities", "g", 1, 0.25)
        (mac,) = db.execute("SELECT mac FROM results WHERE name='game'").fetchone()
        assert mac == expected("results", "r1", "game", b'{"a": 0.45}'.hex())
        (mac,) = db.execute("SELECT mac FROM runs WHERE run_id='r1'").fetchone()
        assert mac == expected("runs", "r1", JOB, json.dumps(REPORT))
        (mac,) = db.execute("SELECT mac FROM owners WHERE name='a'").fetchone()
        assert mac == expected("owners", "r1", "a", "key-a", "valued", None)
    db.close()


TAMPERING = {
    # table read: (statement, what the read must refuse)
    "runs": "UPDATE runs SET report = replace(report, '0.45', '0.9')",
    "runs_job": "UPDATE runs SET job = replace(job, '\"b\"', '\"outsider\"')",
    "owners": "UPDATE owners SET status = 'valued' WHERE name = 'b'",
    "submissions": "UPDATE submissions SET status = 'accepted', reason = NULL WHERE owner = 'b'",
    "submissions_meta": "UPDATE submissions SET meta = replace(meta, '7', '700')",
    "results": "UPDATE results SET value = CAST(replace(CAST(value AS TEXT), '0.45', '0.9') AS BLOB) WHERE name = 'game'",
    "results_swapped": "DELETE FROM results WHERE name = 'game'; UPDATE results SET name = 'game' WHERE name = 'other'",
    "utilities": "UPDATE utilities SET value = value + 0.25 WHERE mask = 1",
    "utilities_moved": "UPDATE utilities SET mask = 5 WHERE mask = 1",
    "mac_removed": "UPDATE results SET mac = NULL",
    "row_inserted": "INSERT INTO utilities (game_key, mask, value) VALUES ('g', 3, 0.1) "
                    "ON CONFLICT(game_key, mask) DO UPDATE SET value = 0.1, mac = NULL",
}
READ_OF = {"submissions_meta": "submissions", "results_swapped": "results", "utilities_moved": "utilities",
           "mac_removed": "results", "row_inserted": "utilities"}


@pytest.mark.parametrize("tamper", sorted(TAMPERING))
def test_an_altered_row_is_refused(tamper, path, mac_key):
    _filled(path, mac_key)
    assert _sql(path, TAMPERING[tamper]) >= 1
    read = READ_OF.get(tamper, tamper)
    if tamper == "utilities_moved":  # the value now claims another coalition
        with Ledger(path, mac_key) as ledger, pytest.raises(LedgerTampered, match="integrity check"):
            ledger.load_utilities("g", np.array([5]))
        return
    with Ledger(path, mac_key) as ledger:
        with pytest.raises(LedgerTampered, match="wrong storage key, or the ledger was altered") as caught:
            _reads(ledger)[read]()
        assert len(str(caught.value).splitlines()) == 1
        untouched = {name: fn for name, fn in _reads(ledger).items()
                     if name != read and not (read.startswith("runs") and name.startswith("runs"))
                     and not (read == "submissions" and name == "adapters")}
        for name, fn in untouched.items():  # the other tables still read: the refusal names the altered row only
            fn()


def test_a_missing_or_swapped_adapter_of_an_accepted_submission_is_refused(path, mac_key):
    _filled(path, mac_key)
    _sql(path, "UPDATE adapters SET adapter_sha256 = 'd-forged' WHERE owner = 'a'")
    with Ledger(path, mac_key) as ledger, pytest.raises(LedgerTampered, match="not the one accepted"):
        ledger.stored_adapters("r1")
    _sql(path, "DELETE FROM adapters WHERE owner = 'a'")
    with Ledger(path, mac_key) as ledger, pytest.raises(LedgerTampered, match="missing from the ledger"):
        ledger.stored_adapters("r1")
    with Ledger(path) as keyless:  # without a key nothing is checked: the owner would simply train again
        assert keyless.stored_adapters("r1") == {}


def test_a_wrong_key_refuses_every_authenticated_row(path, mac_key, tmp_path):
    _filled(path, mac_key)
    other = ledger_mac_key(load_storage_key(generate_storage_key(tmp_path / "other.key")))
    with Ledger(path, other) as ledger:
        for name, read in _reads(ledger).items():
            if name == "adapters":
                continue  # adapters are checked through their submission's row, refused above
            with pytest.raises(LedgerTampered):
                read()
        # progress events and nonces are not authenticated (nothing is computed from them)
        assert ledger.events("r1") == []
        ledger.issue_nonce("r1", "n")
        assert ledger.use_nonce("r1", "n") is None


def test_rows_written_without_a_key_are_not_trusted_with_one(path, mac_key):
    with Ledger(path) as keyless:  # e.g. a read-only tool's ledger, or a ledger older than row MACs
        keyless.save_result("r1", "game", b"{}")
        keyless.save_utilities("g", {1: 0.5})
        assert keyless.result("r1", "game") == b"{}" and keyless.load_utilities("g", np.array([1])) == {1: 0.5}
    with Ledger(path, mac_key) as ledger:
        with pytest.raises(LedgerTampered):
            ledger.result("r1", "game")
        with pytest.raises(LedgerTampered):
            ledger.load_utilities("g", np.array([1]))


def test_a_keyless_reader_reads_altered_rows_as_they_are(path, mac_key):
    """Documented: tools without the storage key (``fairpool serve``) check the signed report instead."""
    _filled(path, mac_key)
    _sql(path, TAMPERING["utilities"])
    with Ledger(path) as keyless:
        assert keyless.load_utilities("g", np.array([1])) == {1: 0.5}


def test_a_ledger_of_another_schema_version_is_refused_untouched(path, mac_key):
    """Issue 13: the ledger carries a schema version; an unversioned (older) ledger or one of
    another version is refused with one line and left as it was, never migrated or misread."""
    from server.federation.ledger import LEDGER_SCHEMA_VERSION, LedgerVersionError

    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:  # the old schema: no mac, no failure columns, no version
        db.executescript("CREATE TABLE runs (run_id TEXT PRIMARY KEY, created_at REAL NOT NULL, job TEXT NOT NULL, "
                         "status TEXT NOT NULL, report TEXT);"
                         "CREATE TABLE utilities (game_key TEXT NOT NULL, mask INTEGER NOT NULL, value REAL NOT NULL, "
                         "PRIMARY KEY (game_key, mask)) WITHOUT ROWID;"
                         "INSERT INTO utilities VALUES ('g', 1, 0.5);")
    db.close()
    before = path.read_bytes()
    with pytest.raises(LedgerVersionError) as caught:
        Ledger(path, mac_key)
    assert str(caught.value) == (f"{path}: a ledger of schema version 0 (unversioned); this FairPool reads version "
                                 f"{LEDGER_SCHEMA_VERSION}: use another `out_dir`, or the FairPool that wrote it")
    assert path.read_bytes() == before
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(LedgerVersionError, match="schema version 99;"):
        Ledger(path, mac_key)
    fresh = path.with_name("fresh.sqlite")
    with Ledger(fresh, mac_key):
        pass
    with sqlite3.connect(fresh) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LEDGER_SCHEMA_VERSION
    db.close()
