"""Running a job through Flower's Simulation Engine with ``flwr run``, from outside.

``flwr run`` is Flower's supported way to start a simulation (``run_simulation`` ignores the
app's run config). We give it a throw-away ``FLWR_HOME`` with a local simulation connection
(one simulated SuperNode per owner, one CPU each so two owners train at once on two cores),
a minimal Flower App directory whose run config points at the job file, follow the
coordinator's progress file while it runs, and stop the local SuperLink it leaves behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common.config.hardware import Hardware
from common.config.job import JOB_FILE, ValuationJob
from common.errors import FairPoolError
from common.storage.progress import PROGRESS_FILE, follow
from server.federation.process_owner import RUN_TAG_VAR, Watchdog, new_tag, stop_tagged
from server.federation.run import ERROR_FILE
from server.report.schema import REPORT_JSON
from server.valuation.scorers import IMPORT_PATH_VAR

FLOWER_LOG = "flower.log"

QUIET_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_DEDUP_LOGS": "0",
    "PYTHONWARNINGS": "ignore",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    # A local simulation is one node: with clusters off Ray takes 127.0.0.1 as the node address
    # and binds its servers there, instead of on the machine's external address.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_flower_app(directory: Path, job_path: Path) -> Path:
    """A Flower App whose components are FairPool's installed apps and whose config names the job."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(
        "[build-system]\nrequires = [\"setuptools\"]\nbuild-backend = \"setuptools.build_meta\"\n\n"
        "[project]\nname = \"fairpool-run\"\nversion = \"0.1.0\"\n"
        "description = \"A FairPool valuation run\"\nlicense = \"Apache-2.0\"\ndependencies = []\n\n"
        "[tool.flwr.app]\npublisher = \"fairpool\"\n\n"
        "[tool.flwr.app.components]\nserverapp = \"server.federation.serverapp:app\"\nclientapp = \"client.app:app\"\n\n"
        f"[tool.flwr.app.config]\njob = {_toml_str(str(job_path))}\n"
    )
    (directory / "fairpool_run.py").write_text('"""Placeholder: the components live in the installed fairpool package."""\n')
    return directory


def simulation_gpus(hardware: Hardware) -> tuple[int, float]:
    """``(GPUs Ray may use, GPU share per simulated owner)``: none unless owners train on CUDA here.

    Ray hands each owner's actor its share through ``CUDA_VISIBLE_DEVICES``, so an owner asking
    for a whole GPU gets one to itself, and ``--gpus-per-owner 0.5`` packs two owners per GPU.
    """
    from common.config.hardware import cuda_device_count

    if hardware.device not in ("auto",) and not hardware.device.startswith("cuda"):
        return 0, 0.0
    count = cuda_device_count()
    return (count, float(hardware.gpus_per_owner)) if count else (0, 0.0)


def write_flower_home(flwr_home: Path, num_supernodes: int, cpus_per_owner: int = 1,
                      gpus: tuple[int, float] = (0, 0.0)) -> Path:
    """A Flower config with one local simulation connection sized for this job and machine."""
    total_gpus, per_owner = gpus
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        "[superlink]\ndefault = \"local\"\n\n[superlink.local]\naddress = \":local:\"\n"
        f"options.num-supernodes = {num_supernodes}\n"
        f"options.backend.client-resources.num-cpus = {cpus_per_owner}\n"
        f"options.backend.client-resources.num-gpus = {per_owner if total_gpus else 0}\n"
        f"options.backend.init-args.num-cpus = {max(cpus_per_owner, os.cpu_count() or 1)}\n"
        f"options.backend.init-args.num-gpus = {total_gpus}\n"
    )
    return flwr_home


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (Linux /proc; empty elsewhere)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def stop_local_superlink(flwr_home: Path, grace_s: float = 5.0) -> None:
    """Stop the ``flower-superlink --simulation`` (and children) started under ``flwr_home``."""
    pids = _processes_mentioning(str(flwr_home))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.killpg(os.getpgid(pid), sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
        if not pids:
            return


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for ``flwr run`` against a private local SuperLink under ``flwr_home``.

    A private port matters: ``flwr run`` reuses any SuperLink answering on the default local
    port, even one started by another run with another environment. ``flwr`` starts
    ``flower-superlink`` by name, so this interpreter's scripts come first on ``PATH``.
    """
    port = str(free_port())
    return {**os.environ, **QUIET_ENV, "FLWR_HOME": str(flwr_home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": port, "FLWR_LOCAL_CONTROL_API_PORT": port,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def flwr_executable() -> str:
    candidate = Path(sys.executable).with_name("flwr")
    return str(candidate) if candidate.exists() else (shutil.which("flwr") or "flwr")


def run_local(job: ValuationJob, on_event: Callable[[dict], None] = lambda _e: None) -> dict:
    """Run ``job`` on this machine: from the ledger alone when it holds every owner's adapter
    (instant resume: no Flower, no training; with an audit, only once the run has finished),
    else in Flower's Simulation Engine."""
    from server.federation.run import run_held

    if runs_from_ledger(job):
        return run_held(job, on_event)
    return run_simulation(job, on_event)


def runs_from_ledger(job: ValuationJob) -> bool:
    """:func:`run_local`'s choice: the ledger holds every owner's adapter and, when the job
    audits (retraining goes through the owners' nodes), the finished run."""
    from server.federation.run import held_owners, run_finished

    return set(job.owner_names) <= held_owners(job) and (not job.valuation.audit or run_finished(job))


def run_simulation(
    job: ValuationJob,
    on_event: Callable[[dict], None] = lambda _e: None,
    timeout_s: float | None = None,
) -> dict:
    """Run ``job`` in Flower's Simulation Engine; return the report or raise with the reason."""
    import json

    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (ERROR_FILE, PROGRESS_FILE):
        (out / stale).unlink(missing_ok=True)
    job_path = job.save(out / JOB_FILE)
    report_path = out / REPORT_JSON
    before = report_path.stat().st_mtime_ns if report_path.exists() else None
    scratch = Path(tempfile.mkdtemp(prefix="fairpool-flwr-"))
    flwr_home = write_flower_home(scratch / "flwr-home", len(job.owners), gpus=simulation_gpus(job.hardware))
    app_dir = write_flower_app(scratch / "app", job_path)
    tag = new_tag()
    env = {**flower_env(flwr_home), RUN_TAG_VAR: tag,  # every process of the run inherits the tag
           # a user's `--scorer module:function` is found where the user ran the command
           IMPORT_PATH_VAR: os.pathsep.join(filter(None, [os.getcwd(), os.environ.get(IMPORT_PATH_VAR, "")]))}
    limit = timeout_s or job.owner_timeout_s + 600
    offset = 0
    proc = None
    watchdog = Watchdog(tag)  # stops the run's processes if this process dies, kill -9 included
    try:
        with (out / FLOWER_LOG).open("w") as log:
            proc = subprocess.Popen([flwr_executable(), "run", str(app_dir), "local", "--stream"],
                                    stdout=log, stderr=subprocess.STDOUT, env=env, cwd=scratch,
                                    start_new_session=True)
            deadline = time.monotonic() + limit
            ended = ""
            while True:
                events, offset = follow(out / PROGRESS_FILE, offset)
                for event in events:
                    on_event(event)
                ended = next((e["stage"] for e in events if e["stage"] in ("done", "error")), "")
                if proc.poll() is not None or ended:
                    break
                if time.monotonic() > deadline:
                    raise FairPoolError(f"the Flower run did not finish within {limit:.0f}s; see {out / FLOWER_LOG}")
                time.sleep(0.25)
            if proc.poll() is None:
                # "done" comes after the report and the ledger are committed, and after "error" owners
                # may still be training (the coordinator gave up on them): nothing is left to wait
                # for. Flower's own wind-down (the SuperExec, Ray's shutdown) took 5-7 s per run;
                # the run's processes are stopped below instead.
                try:
                    proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
    finally:  # every way out (error, timeout, interrupt) stops every process the run started
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        stop_tagged(tag)
        stop_local_superlink(flwr_home)
        watchdog.release()
        shutil.rmtree(scratch, ignore_errors=True)
    if (out / ERROR_FILE).exists():
        raise FairPoolError(json.loads((out / ERROR_FILE).read_text())["error"])
    if not report_path.exists() or report_path.stat().st_mtime_ns == before:
        raise FairPoolError(f"the Flower run ended without a report; see {out / FLOWER_LOG}")
    return json.loads(report_path.read_text())
