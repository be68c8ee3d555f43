"""The coordinator's SQLite ledger: everything a run needs to resume and to prove what it did.

Tables: ``runs`` (job, status, final report), ``owners`` (the run's allowlist with each
owner's public key and final status: expected, valued or rejected with a reason), ``nonces`` (every training request's nonce and
whether a reply used it: a replay is a reply whose nonce is unknown or used), ``submissions``
(every reply, accepted or rejected, with digest, signature, metrics and the reason),
``adapters`` (accepted adapters, sealed with the storage key: :mod:`common.sealing`),
``utilities`` (memoised coalition utilities per game key), ``results`` (finished games and
other expensive intermediate results, by name), and ``events`` (progress, for live watchers).

SQLite in WAL mode so a reader (the publication server, a second process) never blocks the
writer, and every write is one transaction: a coordinator killed mid-write leaves the ledger
as it was before that write, so a re-run resumes from a consistent state.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common.private_files import create_private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    job TEXT NOT NULL,
    status TEXT NOT NULL,
    report TEXT
);
CREATE TABLE IF NOT EXISTS owners (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    public_key TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    issued_at REAL NOT NULL,
    used_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    received_at REAL NOT NULL,
    nonce TEXT,
    adapter_sha256 TEXT,
    signature TEXT,
    num_examples INTEGER,
    meta TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS adapters (
    run_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    adapter_sha256 TEXT NOT NULL,
    sealed BLOB NOT NULL,
    PRIMARY KEY (run_id, owner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS utilities (
    game_key TEXT NOT NULL,
    mask INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (game_key, mask)
) WITHOUT ROWID;
"""

_LOOKUP_CHUNK = 500  # SQLite caps bound parameters per statement


class Ledger:
    """One SQLite file; safe to open from several processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private_file(self.path)  # SQLite gives its -wal and -shm files the database file's mode
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "failure" not in columns:  # ledgers written before failures were kept beside the report
            self._db.execute("ALTER TABLE runs ADD COLUMN failure TEXT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # runs -----------------------------------------------------------------
    def start_run(self, run_id: str, job_json: str) -> None:
        """Record a run as running; a re-run of a finished one keeps its published report and status."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO runs (run_id, created_at, job, status) VALUES (?, ?, ?, 'running') "
                "ON CONFLICT(run_id) DO UPDATE SET status=CASE WHEN runs.report IS NOT NULL "
                "THEN runs.status ELSE 'running' END", (run_id, time.time(), job_json))

    def finish_run(self, run_id: str, status: str, report: dict | None = None, failure: str | None = None) -> None:
        """The run's outcome. A failure never replaces a published report: it is recorded beside it
        (``failure``) and the run keeps its ``done`` status, so owners can still fetch what was paid."""
        with self._db:
            self._db.execute("BEGIN")
            if status != "done":  # failed, interrupted: never over a published report
                self._db.execute("UPDATE runs SET status=CASE WHEN report IS NOT NULL THEN status ELSE ? "
                                 "END, failure=? WHERE run_id=?", (status, failure, run_id))
            else:
                self._db.execute("UPDATE runs SET status=?, report=?, failure=NULL WHERE run_id=?",
                                 (status, json.dumps(report) if report is not None else None, run_id))

    def run(self, run_id: str) -> dict | None:
        row = self._db.execute("SELECT run_id, created_at, status, report, failure FROM runs WHERE run_id=?",
                               (run_id,)).fetchone()
        if row is None:
            return None
        return {"run_id": row[0], "created_at": row[1], "status": row[2],
                "report": json.loads(row[3]) if row[3] else None, "failure": row[4]}

    def run_job(self, run_id: str) -> str | None:
        row = self._db.execute("SELECT job FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return row[0] if row else None

    # owners -------------------------------------------------------------------
    def expect_owners(self, run_id: str, owners: Mapping[str, str]) -> None:
        """Record the allowlist (name → public key text) of a run; existing rows keep their status."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO owners (run_id, name, public_key, status) "
                                 "VALUES (?, ?, ?, 'expected')", ((run_id, n, k) for n, k in owners.items()))

    def settle_owner(self, run_id: str, name: str, status: str, reason: str | None) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE owners SET status=?, reason=? WHERE run_id=? AND name=?",
                             (status, reason, run_id, name))

    def owners(self, run_id: str) -> list[dict]:
        rows = self._db.execute("SELECT name, public_key, status, reason FROM owners WHERE run_id=? ORDER BY name",
                                (run_id,))
        return [{"name": r[0], "public_key": r[1], "status": r[2], "reason": r[3]} for r in rows]

    # nonces -------------------------------------------------------------------
    def issue_nonce(self, run_id: str, nonce: str) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO nonces (nonce, run_id, issued_at) VALUES (?, ?, ?)",
                             (nonce, run_id, time.time()))

    def use_nonce(self, run_id: str, nonce: str) -> str | None:
        """Mark ``nonce`` used; why it cannot be (unknown, another run's, already used), or None."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT run_id, used_at FROM nonces WHERE nonce=?", (nonce,)).fetchone()
            if row is None:
                return "replay: the reply's nonce was never issued by this coordinator"
            if row[0] != run_id:
                return f"replay: the reply's nonce belongs to run {row[0]}"
            if row[1] is not None:
                return "replay: the reply's nonce was already used"
            self._db.execute("UPDATE nonces SET used_at=? WHERE nonce=?", (time.time(), nonce))
        return None

    # submissions and stored adapters ------------------------------------------
    def record_submission(self, run_id: str, owner: str, *, status: str, reason: str | None,
                          meta: Mapping[str, object], sealed: bytes | None = None) -> None:
        """One reply, accepted (with its sealed adapter) or rejected, in one transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO submissions (run_id, owner, received_at, nonce, adapter_sha256, signature, "
                "num_examples, meta, status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, owner, time.time(), meta.get("nonce"), meta.get("adapter_sha256"), meta.get("signature"),
                 meta.get("num_examples"), json.dumps(dict(meta), sort_keys=True), status, reason))
            if sealed is not None:
                self._db.execute("INSERT OR REPLACE INTO adapters (run_id, owner, adapter_sha256, sealed) "
                                 "VALUES (?, ?, ?, ?)", (run_id, owner, meta.get("adapter_sha256"), sealed))

    def submissions(self, run_id: str) -> list[dict]:
        """Every recorded reply of ``run_id``, oldest first."""
        rows = self._db.execute("SELECT owner, received_at, status, reason, meta FROM submissions "
                                "WHERE run_id=? ORDER BY id", (run_id,))
        return [{"owner": r[0], "received_at": r[1], "status": r[2], "reason": r[3], "meta": json.loads(r[4])}
                for r in rows]

    def stored_adapters(self, run_id: str) -> dict[str, tuple[str, bytes, dict]]:
        """Accepted adapters: owner → (digest, sealed blob, the accepted submission's meta)."""
        metas = {}
        for row in self.submissions(run_id):
            if row["status"] == "accepted":
                metas[row["owner"]] = row["meta"]
        rows = self._db.execute("SELECT owner, adapter_sha256, sealed FROM adapters WHERE run_id=?", (run_id,))
        return {owner: (digest, bytes(blob), metas.get(owner, {})) for owner, digest, blob in rows}

    # results --------------------------------------------------------------------
    def save_result(self, run_id: str, name: str, value: bytes) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO results (run_id, name, value) VALUES (?, ?, ?)",
                             (run_id, name, value))

    def result(self, run_id: str, name: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM results WHERE run_id=? AND name=?", (run_id, name)).fetchone()
        return bytes(row[0]) if row else None

    def runs(self) -> list[dict]:
        """Every run, newest first, without its report (for listings)."""
        rows = self._db.execute("SELECT run_id, created_at, status FROM runs ORDER BY created_at DESC, run_id")
        return [{"run_id": r[0], "created_at": r[1], "status": r[2]} for r in rows]

    # progress events ------------------------------------------------------------
    def add_event(self, run_id: str, event: Mapping[str, object]) -> int:
        """Append one progress event; returns its sequence number (1, 2, ... per run)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id=?",
                                   (run_id,)).fetchone()[0]
            self._db.execute("INSERT INTO events (run_id, seq, event) VALUES (?, ?, ?)",
                             (run_id, seq, json.dumps(dict(event))))
        return int(seq)

    def events(self, run_id: str, after_seq: int = 0) -> list[tuple[int, dict]]:
        """Events of ``run_id`` with sequence number above ``after_seq``, in order."""
        rows = self._db.execute("SELECT seq, event FROM events WHERE run_id=? AND seq>? ORDER BY seq",
                                (run_id, after_seq))
        return [(int(seq), json.loads(text)) for seq, text in rows]

    # utilities (common.game.UtilityStore) --------------------------------------
    def load_utilities(self, game_key: str, masks: np.ndarray) -> dict[int, float]:
        found: dict[int, float] = {}
        wanted = [int(m) for m in np.asarray(masks).tolist()]
        for lo in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[lo : lo + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT mask, value FROM utilities WHERE game_key=? AND mask IN ({marks})", (game_key, *chunk))
            found.update((int(m), float(v)) for m, v in rows)
        return found

    def save_utilities(self, game_key: str, values: Mapping[int, float]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO utilities (game_key, mask, value) VALUES (?, ?, ?)",
                                 ((game_key, int(m), float(v)) for m, v in values.items()))

    def utility_count(self, game_key: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM utilities WHERE game_key=?", (game_key,)).fetchone()[0])
