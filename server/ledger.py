"""The coordinator's SQLite ledger: runs, their reports, and memoised coalition utilities.

SQLite in WAL mode so a reader (a report server, a second process) never blocks the writer,
and every write is one transaction: a coordinator killed mid-write leaves the ledger as it
was before that write. Utilities are stored per game key so a re-run, or a second estimator
over the same game, reads them instead of paying for them again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    job TEXT NOT NULL,
    status TEXT NOT NULL,
    report TEXT
);
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
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # runs -----------------------------------------------------------------
    def start_run(self, run_id: str, job_json: str) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO runs (run_id, created_at, job, status) VALUES (?, ?, ?, 'running') "
                "ON CONFLICT(run_id) DO UPDATE SET status='running'", (run_id, time.time(), job_json))

    def finish_run(self, run_id: str, status: str, report: dict | None = None) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE runs SET status=?, report=? WHERE run_id=?",
                             (status, json.dumps(report) if report is not None else None, run_id))

    def run(self, run_id: str) -> dict | None:
        row = self._db.execute("SELECT run_id, created_at, status, report FROM runs WHERE run_id=?",
                               (run_id,)).fetchone()
        if row is None:
            return None
        return {"run_id": row[0], "created_at": row[1], "status": row[2],
                "report": json.loads(row[3]) if row[3] else None}

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
