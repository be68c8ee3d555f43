"""The coordinator's SQLite ledger: everything a run needs to resume and to prove what it did.

Tables: ``runs`` (job, status, final report), ``owners`` (the run's allowlist with each
owner's public key and final status: expected, valued or rejected with a reason), ``nonces`` (every training request's nonce and
whether a reply used it: a replay is a reply whose nonce is unknown or used), ``submissions``
(every reply, accepted or rejected, with digest, signature, metrics and the reason),
``adapters`` (accepted adapters, sealed with the storage key: :mod:`common.trust.sealing`),
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

from common.errors import FairPoolError
from common.status import OwnerStatus, RunStatus, SubmissionStatus
from common.storage.private_files import create_private_file
from common.trust.canonical import canonical_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    job TEXT NOT NULL,
    status TEXT NOT NULL,
    report TEXT,
    failure TEXT,
    mac TEXT
);
CREATE TABLE IF NOT EXISTS owners (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    public_key TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    mac TEXT,
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
    reason TEXT,
    mac TEXT
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
    mac TEXT,
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
    mac TEXT,
    PRIMARY KEY (game_key, mask)
) WITHOUT ROWID;
"""

_LOOKUP_CHUNK = 500  # SQLite caps bound parameters per statement
_MAC_TABLES = ("runs", "owners", "submissions", "results", "utilities")
"""Tables whose rows a resume trusts, each carrying ``mac``: HMAC-SHA256 over the row's table and fields."""


LEDGER_SCHEMA_VERSION = 2
"""Version of the ledger's tables (SQLite ``user_version``); 2: authenticated rows, failures kept."""


class LedgerVersionError(FairPoolError):
    """The ledger was written with another schema version: refused, never misread."""


class LedgerTampered(FairPoolError):
    """A row fails its integrity check, or a row that must exist is missing: the ledger was altered."""


class Ledger:
    """One SQLite file; safe to open from several processes."""

    def __init__(self, path: str | Path, mac_key: bytes | None = None) -> None:
        """``mac_key`` (:func:`common.trust.sealing.ledger_mac_key`) authenticates every trusted row: rows are
        written with their MAC, and a row read back whose MAC does not match is refused
        (:class:`LedgerTampered`), never used. Without it (read-only tools such as ``fairpool serve``,
        which verify the signed report instead) rows are neither MACed nor checked."""
        self.path = Path(path)
        self._mac_key = mac_key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private_file(self.path)  # SQLite gives its -wal and -shm files the database file's mode
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._open_schema()  # first: a refused ledger is left byte for byte as it was
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")

    def _open_schema(self) -> None:
        """Create the tables in a new ledger; refuse one of another schema version with one line.

        The version is SQLite's ``user_version``. A resume trusts what the ledger holds, so a
        ledger written by another layout (or by a FairPool from before versions) is refused,
        never read as if it were this one.
        """
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == LEDGER_SCHEMA_VERSION:
            return  # the common case takes no lock: readers (``serve``) open the ledger per request
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            tables = self._db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
            if version == 0 and tables == 0:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {LEDGER_SCHEMA_VERSION}")
                version = LEDGER_SCHEMA_VERSION
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if version != LEDGER_SCHEMA_VERSION:
            self._db.close()
            shown = version if version else "0 (unversioned)"
            raise LedgerVersionError(f"{self.path}: a ledger of schema version {shown}; this FairPool reads "
                                     f"version {LEDGER_SCHEMA_VERSION}: use another `out_dir`, or the FairPool that "
                                     "wrote it")

    # row authentication ---------------------------------------------------------
    def _mac(self, table: str, *fields) -> str | None:
        if self._mac_key is None:
            return None
        import hashlib
        import hmac

        payload = canonical_json([table, *[f.hex() if isinstance(f, (bytes, memoryview)) else f for f in fields]])
        return hmac.new(self._mac_key, payload, hashlib.sha256).hexdigest()

    def _check(self, table: str, mac: str | None, *fields, what: str) -> None:
        """Refuse a row whose MAC does not match (when this ledger was opened with a key)."""
        if self._mac_key is None:
            return
        import hmac

        if not mac or not hmac.compare_digest(mac, self._mac(table, *fields)):
            raise LedgerTampered(f"{self.path}: {what} fails its integrity check: wrong storage key, or the "
                                 "ledger was altered; refusing to use it")

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
                "INSERT INTO runs (run_id, created_at, job, status, mac) VALUES (?, ?, ?, 'running', ?) "
                "ON CONFLICT(run_id) DO UPDATE SET status=CASE WHEN runs.report IS NOT NULL "
                "THEN runs.status ELSE 'running' END", (run_id, time.time(), job_json,
                                                         self._mac("runs", run_id, job_json, None)))

    def finish_run(self, run_id: str, status: str, report: dict | None = None, failure: str | None = None) -> None:
        """The run's outcome. A failure never replaces a published report: it is recorded beside it
        (``failure``) and the run keeps its ``done`` status, so owners can still fetch what was paid."""
        with self._db:
            self._db.execute("BEGIN")
            if status != RunStatus.DONE:  # failed, interrupted: never over a published report
                self._db.execute("UPDATE runs SET status=CASE WHEN report IS NOT NULL THEN status ELSE ? "
                                 "END, failure=? WHERE run_id=?", (status, failure, run_id))
            else:
                text = json.dumps(report) if report is not None else None
                job = self._db.execute("SELECT job FROM runs WHERE run_id=?", (run_id,)).fetchone()
                mac = self._mac("runs", run_id, job[0] if job else None, text)
                self._db.execute("UPDATE runs SET status=?, report=?, failure=NULL, mac=? WHERE run_id=?",
                                 (status, text, mac, run_id))

    def run(self, run_id: str) -> dict | None:
        row = self._db.execute("SELECT run_id, created_at, status, report, failure, job, mac FROM runs "
                               "WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            return None
        self._check("runs", row[6], row[0], row[5], row[3], what=f"run {run_id}'s job and report")
        return {"run_id": row[0], "created_at": row[1], "status": row[2],
                "report": json.loads(row[3]) if row[3] else None, "failure": row[4]}

    def run_job(self, run_id: str) -> str | None:
        row = self._db.execute("SELECT job, report, mac FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            return None
        self._check("runs", row[2], run_id, row[0], row[1], what=f"run {run_id}'s job and report")
        return row[0]

    # owners -------------------------------------------------------------------
    def expect_owners(self, run_id: str, owners: Mapping[str, str]) -> None:
        """Record the allowlist (name → public key text) of a run; existing rows keep their status."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO owners (run_id, name, public_key, status, mac) "
                                 "VALUES (?, ?, ?, 'expected', ?)",
                                 ((run_id, n, k, self._mac("owners", run_id, n, k, OwnerStatus.EXPECTED, None))
                                  for n, k in owners.items()))

    def settle_owner(self, run_id: str, name: str, status: str, reason: str | None) -> None:
        with self._db:
            self._db.execute("BEGIN")
            row = self._db.execute("SELECT public_key FROM owners WHERE run_id=? AND name=?", (run_id, name)).fetchone()
            mac = self._mac("owners", run_id, name, row[0] if row else "", status, reason)
            self._db.execute("UPDATE owners SET status=?, reason=?, mac=? WHERE run_id=? AND name=?",
                             (status, reason, mac, run_id, name))

    def owners(self, run_id: str) -> list[dict]:
        rows = self._db.execute("SELECT name, public_key, status, reason, mac FROM owners WHERE run_id=? "
                                "ORDER BY name", (run_id,)).fetchall()
        for r in rows:
            self._check("owners", r[4], run_id, r[0], r[1], r[2], r[3], what=f"owner {r[0]}'s allowlist entry")
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
            text = json.dumps(dict(meta), sort_keys=True)
            self._db.execute(
                "INSERT INTO submissions (run_id, owner, received_at, nonce, adapter_sha256, signature, "
                "num_examples, meta, status, reason, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, owner, time.time(), meta.get("nonce"), meta.get("adapter_sha256"), meta.get("signature"),
                 meta.get("num_examples"), text, status, reason,
                 self._mac("submissions", run_id, owner, text, status, reason)))
            if sealed is not None:
                self._db.execute("INSERT OR REPLACE INTO adapters (run_id, owner, adapter_sha256, sealed) "
                                 "VALUES (?, ?, ?, ?)", (run_id, owner, meta.get("adapter_sha256"), sealed))

    def submissions(self, run_id: str) -> list[dict]:
        """Every recorded reply of ``run_id``, oldest first."""
        rows = self._db.execute("SELECT owner, received_at, status, reason, meta, mac FROM submissions "
                                "WHERE run_id=? ORDER BY id", (run_id,)).fetchall()
        for r in rows:
            self._check("submissions", r[5], run_id, r[0], r[4], r[2], r[3], what=f"{r[0]}'s submission")
        return [{"owner": r[0], "received_at": r[1], "status": r[2], "reason": r[3], "meta": json.loads(r[4])}
                for r in rows]

    def stored_owners(self, run_id: str) -> set[str]:
        """Owners of ``run_id`` whose accepted adapter is stored, without reading the (sealed,
        possibly large) adapters themselves: enough to decide whether anyone must train."""
        accepted = {row["owner"] for row in self.submissions(run_id) if row["status"] == SubmissionStatus.ACCEPTED}
        stored = {owner for (owner,) in self._db.execute("SELECT owner FROM adapters WHERE run_id=?", (run_id,))}
        return accepted & stored

    def stored_adapters(self, run_id: str) -> dict[str, tuple[str, bytes, dict]]:
        """Accepted adapters: owner → (digest, sealed blob, the accepted submission's meta)."""
        metas = {}
        for row in self.submissions(run_id):
            if row["status"] == SubmissionStatus.ACCEPTED:
                metas[row["owner"]] = row["meta"]
        rows = self._db.execute("SELECT owner, adapter_sha256, sealed FROM adapters WHERE run_id=?",
                                (run_id,)).fetchall()
        stored = {owner: (digest, bytes(blob), metas.get(owner, {})) for owner, digest, blob in rows}
        if self._mac_key is not None:  # an accepted adapter that vanished is an altered ledger, not a retrain
            for owner, meta in metas.items():
                if owner not in stored:
                    raise LedgerTampered(f"{self.path}: {owner}'s accepted adapter is missing from the ledger "
                                         "(the ledger was altered); refusing to retrain it silently")
                if meta.get("adapter_sha256") and stored[owner][0] != meta["adapter_sha256"]:
                    raise LedgerTampered(f"{self.path}: {owner}'s stored adapter is not the one accepted")
            stored = {owner: value for owner, value in stored.items() if owner in metas}
        return stored

    # results --------------------------------------------------------------------
    def save_result(self, run_id: str, name: str, value: bytes) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO results (run_id, name, value, mac) VALUES (?, ?, ?, ?)",
                             (run_id, name, value, self._mac("results", run_id, name, bytes(value))))

    def result(self, run_id: str, name: str) -> bytes | None:
        row = self._db.execute("SELECT value, mac FROM results WHERE run_id=? AND name=?", (run_id, name)).fetchone()
        if row is None:
            return None
        value = row[0].encode() if isinstance(row[0], str) else bytes(row[0])  # a hand edit can make it TEXT
        self._check("results", row[1], run_id, name, value, what=f"the stored result {name}")
        return value

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

    # utilities (common.valuation.game.UtilityStore) --------------------------------------
    def load_utilities(self, game_key: str, masks: np.ndarray) -> dict[int, float]:
        found: dict[int, float] = {}
        wanted = [int(m) for m in np.asarray(masks).tolist()]
        for lo in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[lo : lo + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT mask, value, mac FROM utilities WHERE game_key=? AND mask IN ({marks})", (game_key, *chunk))
            for m, v, mac in rows:
                self._check("utilities", mac, game_key, int(m), float(v), what=f"a stored utility of {game_key}")
                found[int(m)] = float(v)
        return found

    def save_utilities(self, game_key: str, values: Mapping[int, float]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO utilities (game_key, mask, value, mac) VALUES (?, ?, ?, ?)",
                                 ((game_key, int(m), float(v), self._mac("utilities", game_key, int(m), float(v)))
                                  for m, v in values.items()))

    def utility_count(self, game_key: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM utilities WHERE game_key=?", (game_key,)).fetchone()[0])
