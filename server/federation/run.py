"""Running one job inside the coordinator: resume, collect, admit, value, sign, write — or say why not.

Everything the run learns goes into the ledger as soon as it is known (accepted adapters,
sealed; rejections with reasons; coalition utilities; finished games), so re-running the same
job after a crash resumes: owners whose adapters are stored are not asked to train again, no
stored utility or game is recomputed, and the report equals an uninterrupted run's.

A failed run writes ``error.json`` (never a partial report) so the CLI, which waits on the
Flower process from outside, can tell the user the actual reason.
"""

from __future__ import annotations

import json
import sqlite3
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from common.config.job import ValuationJob
from common.errors import FairPoolError
from common.status import RunStatus, SubmissionStatus
from common.storage.locks import LockHeld, exclusive_lock
from common.storage.progress import PROGRESS_FILE, ProgressLog
from common.trust import faults
from server.federation.admission import Admission
from server.federation.ledger import Ledger
from server.report.write import report_is_written, write_report
from server.valuation.audit import Retrainer
from server.valuation.pipeline import Submission, value_submissions

ERROR_FILE = "error.json"
LEDGER_FILE = "ledger.sqlite"
LEDGER_LOCK = ".ledger.lock"
"""Held by the coordinator for its whole run: one coordinator per ledger, even an orphaned one."""

Collector = Callable[[Admission, Sequence[str], Callable[..., None]], dict[str, str]]
"""``collect(admission, wanted_owners, progress) -> {owner: reason not accepted}``; accepted
submissions go through ``admission.admit`` into the ledger."""

Auditors = Callable[[Callable[..., None]], Retrainer]
"""``auditors(progress)``: the federation's retrainer of the audit's stages (a job's ``audit``)."""


def run_job(job: ValuationJob, collect: Collector, on_event: Callable[[dict], object] | None = None,
            auditors: Auditors | None = None) -> dict | None:
    """Collect the adapters still missing with ``collect``, then value; return the report (None on error).

    Every progress event goes to ``progress.jsonl`` and the ledger, and to ``on_event`` when given
    (a caller in this process draws it at once instead of following the file). ``auditors``
    gives the retrainer of a job that asks for an audit (the federation's owners).
    """
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(out / LEDGER_LOCK, f"the ledger in {out}"):
            return _run_locked(job, collect, out, on_event, auditors)
    except LockHeld as exc:
        # Another coordinator (one orphaned by a killed CLI) is live on this ledger: its run is left
        # untouched; only this CLI hears why (the CLI's own lock means no other CLI follows OUT).
        _fail(out, ProgressLog(out), str(exc))
        return None


def held_owners(job: ValuationJob) -> set[str]:
    """Owners whose accepted adapter the ledger in ``OUT`` already holds for this run (none without one).

    A ledger that cannot be read here (another schema version, a wrong key, altered rows) holds
    nothing for this question: the run itself then stops with the reason.
    """
    path = Path(job.out_dir) / LEDGER_FILE
    if not path.exists():
        return set()
    try:
        with Ledger(path, _ledger_key(job)) as ledger:
            return ledger.stored_owners(job.run_id)
    except (FairPoolError, OSError, sqlite3.Error):
        return set()


def run_finished(job: ValuationJob) -> bool:
    """Whether the ledger in ``OUT`` holds this run's finished report (False without one)."""
    path = Path(job.out_dir) / LEDGER_FILE
    if not path.exists():
        return False
    try:
        with Ledger(path, _ledger_key(job)) as ledger:
            row = ledger.run(job.run_id)
    except (FairPoolError, OSError, sqlite3.Error):
        return False
    return row is not None and row["status"] == RunStatus.DONE


def run_held(job: ValuationJob, on_event: Callable[[dict], object] | None = None) -> dict:
    """Value ``job`` in this process from what its ledger holds: every owner's adapter is stored,
    so nobody is asked to train and no federation is started (a re-run of a finished or
    crashed-after-training job resumes in seconds). Raises :class:`FairPoolError` on failure."""
    missing = set(job.owner_names) - held_owners(job)
    if missing:
        raise FairPoolError(f"the ledger holds no adapter of {', '.join(sorted(missing))}: they must train")

    def ask_nobody(_admission, wanted, _progress) -> dict[str, str]:  # cannot happen: all are held
        raise FairPoolError(f"asked to collect {', '.join(wanted)} although the ledger held every adapter")

    out = Path(job.out_dir)
    (out / PROGRESS_FILE).unlink(missing_ok=True)  # the events of this run only, as a Flower run writes
    finished = _replay_finished(job, out, on_event)
    if finished is not None:
        return finished
    report = run_job(job, ask_nobody, on_event)
    if report is None:
        raise FairPoolError(json.loads((out / ERROR_FILE).read_text())["error"])
    return report


def _run_log(out: Path, ledger: Ledger, run_id: str, on_event: Callable[[dict], object] | None) -> ProgressLog:
    """The run's progress log: ``progress.jsonl``, the ledger (for live watchers) and ``on_event``."""
    def sink(event: dict) -> None:
        ledger.add_event(run_id, event)
        if on_event is not None:
            on_event(event)

    return ProgressLog(out, sink=sink)


def _replay_finished(job: ValuationJob, out: Path, on_event: Callable[[dict], object] | None) -> dict | None:
    """A finished run's signed report, from the ledger (authenticated), its files written again;
    None when the run has not finished. Nothing is loaded or recomputed: the report is the run's."""
    with exclusive_lock(out / LEDGER_LOCK, f"the ledger in {out}"), Ledger(out / LEDGER_FILE, _ledger_key(job)) as ledger:
        row = ledger.run(job.run_id)
        if row is None or row["status"] != RunStatus.DONE or not isinstance(row.get("report"), dict):
            return None
        report = row["report"]
        log = _run_log(out, ledger, job.run_id, on_event)
        owners = len(job.owners)
        log.emit("start", f"run {job.run_id}: {owners} owner(s) (finished: its report is replayed from the ledger)",
                 total=owners)
        log.emit("resume", f"{owners} accepted adapter(s) already in the ledger: nobody trains", held=owners,
                 total=owners)
        if not report_is_written(report, out):
            write_report(report, job.out_dir, public=job.public_report)
        log.emit("done", f"report written to {out / 'report.json'}")
        return report


def _run_locked(job: ValuationJob, collect: Collector, out: Path,
                on_event: Callable[[dict], object] | None = None, auditors: Auditors | None = None) -> dict | None:
    (out / ERROR_FILE).unlink(missing_ok=True)
    try:
        mac_key = _ledger_key(job)
    except FairPoolError as exc:
        _fail(out, ProgressLog(out), str(exc))
        return None
    with Ledger(out / LEDGER_FILE, mac_key) as ledger:
        log = _run_log(out, ledger, job.run_id, on_event)
        try:
            previous = ledger.run_job(job.run_id)
            if previous is not None and not job.same_work_as(ValuationJob.from_json(previous)):
                raise FairPoolError(f"run {job.run_id} in {out} was started with different settings; "
                                    "use another output directory")
            ledger.start_run(job.run_id, job.to_json())
            log.emit("start", f"run {job.run_id}: {len(job.owners)} owner(s)"
                     + (" (resumed)" if previous else ""), total=len(job.owners))
            report = _run(job, ledger, log, collect, auditors)
        except FairPoolError as exc:
            _fail(out, log, str(exc))
            ledger.finish_run(job.run_id, RunStatus.FAILED, failure=str(exc))
            return None
        except Exception as exc:  # an unexpected failure still reaches the user, with its trace on disk
            message = f"internal error: {type(exc).__name__}: {exc}"
            _fail(out, log, message, traceback.format_exc())
            ledger.finish_run(job.run_id, RunStatus.FAILED, failure=message)
            return None
        ledger.finish_run(job.run_id, RunStatus.DONE, report)
        log.emit("done", f"report written to {out / 'report.json'}")
    return report


def _run(job: ValuationJob, ledger: Ledger, log: ProgressLog, collect: Collector,
         auditors: Auditors | None = None) -> dict:
    from common.model.base import load_spec_model
    from common.model.lora import expected_adapter_shapes

    base = load_spec_model(job.spec, job.hardware)
    ledger.expect_owners(job.run_id, {o.name: o.public_key for o in job.owners})
    expected = expected_adapter_shapes(job.spec, base[0])
    admission = Admission(job, ledger, expected, log.emit)
    held = admission.stored()
    if held:
        log.emit("resume", f"{len(held)} accepted adapter(s) already in the ledger: "
                           f"{', '.join(sorted(held))} will not retrain", held=len(held), total=len(job.owners))
    wanted = [name for name in job.owner_names if name not in held]
    reasons: dict[str, str] = {}
    if wanted:
        reasons = collect(admission, wanted, log.emit)
    accepted = {**held, **admission.accepted}
    faults.hit("before_valuation")
    submissions = [accepted.get(name) or Submission(name, error=reasons.get(name) or "no adapter accepted")
                   for name in job.owner_names]
    try:
        retrainer = auditors(log.emit) if auditors is not None and job.valuation.audit else None
        report = value_submissions(job, submissions, log.emit, store=ledger, base=base, expected=expected,
                                   refused=admission.refused, retrainer=retrainer)
    finally:  # also when the quorum is not met: the ledger says who was missing and why
        for sub in submissions:
            ledger.settle_owner(job.run_id, sub.owner, SubmissionStatus.REJECTED if sub.error else SubmissionStatus.ACCEPTED,
                                sub.error)
    for owner in report["owners"]:
        ledger.settle_owner(job.run_id, owner["name"], owner["status"], owner["reason"])
    report = _sign(job, report)
    write_report(report, job.out_dir, public=job.public_report)
    return report


def _ledger_key(job: ValuationJob) -> bytes | None:
    """The key authenticating the ledger's rows, derived from the job's storage key (none without one)."""
    if not job.storage_key:
        return None
    from common.trust.sealing import ledger_mac_key, load_storage_key

    return ledger_mac_key(load_storage_key(job.storage_key))


def _sign(job: ValuationJob, report: dict) -> dict:
    """The report signed with the coordinator's key, when the job names one."""
    if not job.coordinator_key:
        return report
    from common.trust.passphrase import passphrase_from_env
    from common.trust.signing import load_private_key, sign_report

    passphrase = passphrase_from_env(job.coordinator_key_passphrase_env or None,
                                     what="the job's coordinator_key_passphrase_env")
    key = load_private_key(job.coordinator_key, passphrase)
    return sign_report(report, key)


def _fail(out: Path, log: ProgressLog, message: str, trace: str | None = None) -> None:
    (out / ERROR_FILE).write_text(json.dumps({"error": message, "traceback": trace}, indent=2))
    log.emit("error", message)
