"""Flower ServerApp of the coordinator: collect adapters, value, publish the report.

``flwr run .`` with an empty ``job`` runs the embedded default market; ``fairpool value`` and
``fairpool demo`` write a job file and pass its path as the run config's ``job``.
"""

from __future__ import annotations

import logging
import os

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config.job import ValuationJob
from server.federation.collect import collect_adapters
from server.federation.run import run_job

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    job_path = str(context.run_config.get("job", "") or "")
    if job_path:
        job = ValuationJob.load(job_path)
    else:  # the embedded world is optional: loaded only when no job is given
        from common.embedded.default_job import default_job

        job = default_job()
    report = run_job(job, lambda admission, wanted, progress: collect_adapters(grid, job, admission, wanted,
                                                                                progress))
    where = job.out_dir
    logging.getLogger("flwr").info("FairPool %s: %s", "report written to" if report else "run failed, see", where)
