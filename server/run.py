"""Running one job inside the coordinator: collect, value, write — or record why not.

A failed run writes ``error.json`` (never a partial report) so the CLI, which waits on the
Flower process from outside, can tell the user the actual reason.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from pathlib import Path

from common.errors import FairPoolError
from common.job import ValuationJob
from common.progress import ProgressLog
from server.coordinator import Submission, value_submissions
from server.ledger import Ledger
from server.report import write_report

ERROR_FILE = "error.json"
LEDGER_FILE = "ledger.sqlite"

Collector = Callable[[Callable[..., None]], list[Submission]]


def run_job(job: ValuationJob, collect: Collector) -> dict | None:
    """Collect submissions with ``collect`` then value them; return the report (or None on error)."""
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ERROR_FILE).unlink(missing_ok=True)
    log = ProgressLog(out)
    log.emit("start", f"run {job.run_id}: {len(job.owners)} owner(s)", total=len(job.owners))
    with Ledger(out / LEDGER_FILE) as ledger:
        ledger.start_run(job.run_id, job.to_json())
        try:
            submissions = collect(log.emit)
            report = value_submissions(job, submissions, log.emit, store=ledger)
            write_report(report, out)
        except FairPoolError as exc:
            _fail(out, log, str(exc))
            ledger.finish_run(job.run_id, "failed")
            return None
        except Exception as exc:  # an unexpected failure still reaches the user, with its trace on disk
            _fail(out, log, f"internal error: {type(exc).__name__}: {exc}", traceback.format_exc())
            ledger.finish_run(job.run_id, "failed")
            return None
        ledger.finish_run(job.run_id, "done", report)
    log.emit("done", f"report written to {out / 'report.json'}")
    return report


def _fail(out: Path, log: ProgressLog, message: str, trace: str | None = None) -> None:
    (out / ERROR_FILE).write_text(json.dumps({"error": message, "traceback": trace}, indent=2))
    log.emit("error", message)
