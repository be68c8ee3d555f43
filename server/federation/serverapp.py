"""Flower ServerApp of the coordinator: collect adapters, value, publish the report.

``flwr run .`` with an empty ``job`` runs the embedded default market; ``fairpool value`` and
``fairpool demo`` write a job file and pass its path as the run config's ``job``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config.job import ValuationJob
from common.storage.progress import PROGRESS_FILE, follow
from server.federation.audit_grid import GridRetrainer
from server.federation.collect import collect_adapters
from server.federation.run import ERROR_FILE, run_job

app = ServerApp()


class RunFailed(RuntimeError):
    """Raised at the end of a failed run so that Flower records the run as failed (and ``flwr
    run`` can say so); the reason is in ``error.json``, which the ERROR line names."""


@app.main()
def main(grid: Grid, context: Context) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    log = logging.getLogger("flwr")
    job_path = str(context.run_config.get("job", "") or "")
    if job_path:
        job = ValuationJob.load(job_path)
    else:  # the embedded world is optional: loaded only when no job is given
        from common.embedded.default_job import default_job

        job = default_job()
    if job.simulated and not job.coordinator_key:  # sign, as `fairpool demo` does: keys under OUT/keys
        from common.embedded.default_job import with_trust_material

        job = with_trust_material(job)

    def stream(event: dict) -> None:  # `flwr run --stream` shows the ServerApp's log lines
        log.info("FairPool [%7.1fs] %10s: %s", event.get("t", 0.0), event.get("stage", "?"), event.get("message", ""))

    out = Path(job.out_dir)
    owners = _OwnerSteps(out / PROGRESS_FILE, log)  # simulated owners append their steps to that file
    try:
        report = run_job(job, lambda admission, wanted, progress: collect_adapters(grid, job, admission, wanted,
                                                                                    progress), stream,
                         auditors=lambda progress: GridRetrainer(grid, job, progress))
    finally:
        owners.stop()
    if report is None:
        log.error("FairPool run %s failed: %s (details in %s)", job.run_id, _reason(out), out / ERROR_FILE)
        raise RunFailed(f"FairPool run {job.run_id} failed; see {out / ERROR_FILE}")
    log.info("FairPool report written to %s", out / "report.json")


class _OwnerSteps:
    """Streams the owners' training steps (appended to the progress file by simulated owners,
    not emitted by this process) to Flower's log while the run goes on."""

    def __init__(self, path: Path, log: logging.Logger, period_s: float = 1.0) -> None:
        self._path, self._log, self._period = path, log, period_s
        self._offset = path.stat().st_size if path.exists() else 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="fairpool-owner-steps", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        events, self._offset = follow(self._path, self._offset)
        for event in events:
            if event.get("stage") == "owner":
                self._log.info("FairPool %18s %s", "owner:", event.get("message", ""))

    def _follow(self) -> None:
        while not self._done.wait(self._period):
            self._drain()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self._drain()


def _reason(out: Path) -> str:
    try:
        return str(json.loads((out / ERROR_FILE).read_text())["error"])
    except (OSError, ValueError, KeyError):
        return "no error.json"
