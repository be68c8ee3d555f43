"""Benchmark of ``fairpool demo``: cold base-model build, then the demo's wall time, memory and stages.

    .venv/bin/python benchmarks/run.py                     # cold build in a fresh FAIRPOOL_HOME, then the demo
    .venv/bin/python benchmarks/run.py --skip-cold-build   # quick: the demo with the usual (cached) FAIRPOOL_HOME

Every figure is measured on this machine in this run, then merged into ``benchmarks/results.json``
(other keys in that file are kept; the ones measured here are replaced). Figures are described
in ``benchmarks/README.md``. A failed step prints the tail of its output and exits non-zero
without writing anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import decoding  # benchmarks/decoding.py, beside this file
import fidelity  # benchmarks/fidelity.py, beside this file
import gpu  # benchmarks/gpu.py, beside this file
import midsize  # benchmarks/midsize.py, beside this file
import psutil
import publication  # benchmarks/publication.py, beside this file
import valuation  # benchmarks/valuation.py, beside this file

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.json"
FAIRPOOL = Path(sys.executable).with_name("fairpool")

# Issue 14's target: a resumed demo (every adapter and the report in the ledger) in at most 5 s.
RESUME_WALL_TARGET_S = 5.0
# The target: the whole demo, base model already cached, in under 180 s and 4 GB.
DEMO_WALL_TARGET_S = 180.0
DEMO_RSS_TARGET_MB = 4096.0

SAMPLE_PERIOD_S = 0.2
TAG_VAR = "FAIRPOOL_BENCH_TAG"  # inherited by every process of a measured run, even detached ones

BASE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}

# Runs in a fresh interpreter: builds the embedded base model into $FAIRPOOL_HOME and reports
# its own peak RSS (ru_maxrss is in KiB on Linux) and the time of the build call alone.
BUILD_CHILD = r"""
import json, resource, sys, time
from common.embedded.base_model import build_base_model
started = time.perf_counter()
path = build_base_model(force=True)  # pretraining itself, not the shipped copy
elapsed = time.perf_counter() - started
print("BENCH-RESULT " + json.dumps({
    "path": str(path),
    "build_call_s": elapsed,
    "self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "children_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
}), flush=True)
"""


class StepFailed(Exception):
    """A measured step failed; the message says what and shows the output tail."""


# --------------------------------------------------------------------------- measuring processes


def _tagged(proc: psutil.Process, tag: str) -> bool:
    try:
        return proc.environ().get(TAG_VAR) == tag
    except (psutil.Error, OSError):
        return False


def run_process_tree(cmd: list[str], env: dict, stdout_path: Path, stderr_path: Path,
                     timeout_s: float, period_s: float = SAMPLE_PERIOD_S) -> dict:
    """Run ``cmd``; sample the summed RSS of it and every descendant every ``period_s``.

    Descendants are found two ways: the recursive children of the process, and any process whose
    environment carries this run's tag (a SuperLink or Ray daemon that detached from the tree).
    Returns wall seconds, exit code, peak summed RSS and PSS (MiB; PSS shares each shared page
    among the processes mapping it, so it does not double-count), the most processes alive at once
    and how many processes of each name were seen.
    """
    tag = uuid.uuid4().hex
    env = {**env, TAG_VAR: tag}
    members: dict[int, psutil.Process] = {}
    peak_bytes = 0
    peak_pss_bytes = 0
    pss_ok = True
    peak_procs = 0
    names: dict[int, str] = {}
    samples = 0
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        started = time.perf_counter()
        proc = psutil.Popen(cmd, env=env, stdout=out, stderr=err, cwd=ROOT, start_new_session=True)
        members[proc.pid] = proc
        deadline = started + timeout_s
        next_sample = started
        timed_out = False
        while True:
            exited = proc.poll() is not None
            # Tree membership: children of the root, plus tagged processes (checked once each).
            try:
                for child in proc.children(recursive=True):
                    members.setdefault(child.pid, child)
            except psutil.Error:
                pass
            for candidate in psutil.process_iter():
                if candidate.pid not in members and candidate.pid != os.getpid() and _tagged(candidate, tag):
                    members[candidate.pid] = candidate
            total = 0
            total_pss = 0
            alive = 0
            for pid, member in list(members.items()):
                try:
                    if not member.is_running() or member.status() == psutil.STATUS_ZOMBIE:
                        raise psutil.NoSuchProcess(pid)
                    if pss_ok:
                        try:
                            mem = member.memory_full_info()
                            total_pss += mem.pss
                        except (psutil.AccessDenied, AttributeError):
                            pss_ok = False  # no smaps here: report RSS only
                            mem = member.memory_info()
                    else:
                        mem = member.memory_info()
                    total += mem.rss
                    alive += 1
                    if pid not in names:
                        names[pid] = member.name()
                except psutil.Error:
                    members.pop(pid, None)
                    continue
            peak_bytes = max(peak_bytes, total)
            peak_pss_bytes = max(peak_pss_bytes, total_pss)
            peak_procs = max(peak_procs, alive)
            samples += 1
            if exited:
                break
            if time.perf_counter() > deadline:
                timed_out = True
                break
            next_sample += period_s
            time.sleep(max(0.0, next_sample - time.perf_counter()))
        wall = time.perf_counter() - started
        if timed_out:
            _terminate(list(members.values()))
        returncode = proc.wait()
    # Daemons of the run may take a moment to follow the root out; only report those that stay.
    others = [p for p in members.values() if p.pid != proc.pid and _alive(p)]
    _, leftovers = psutil.wait_procs(others, timeout=10) if others else ([], [])
    leftovers = [p for p in leftovers if _alive(p)]
    seen: dict[str, int] = {}
    for name in names.values():
        seen[name] = seen.get(name, 0) + 1
    return {"wall_s": wall, "returncode": returncode, "timed_out": timed_out,
            "peak_rss_mb": peak_bytes / 2**20, "peak_pss_mb": peak_pss_bytes / 2**20 if pss_ok else None,
            "peak_processes": peak_procs, "processes_seen": dict(sorted(seen.items())), "samples": samples,
            "leftover_pids": [p.pid for p in leftovers]}


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _terminate(procs: list[psutil.Process]) -> None:
    """End the processes this benchmark started (by pid), politely first."""
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(procs, timeout=5)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not readable)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


# --------------------------------------------------------------------------- the steps


def measure_cold_build(home: Path, scratch: Path, timeout_s: float) -> dict:
    """Build the embedded base model in ``home`` (which must be empty) in a fresh interpreter."""
    env = {**os.environ, **BASE_ENV, "FAIRPOOL_HOME": str(home)}
    stdout, stderr = scratch / "build.stdout", scratch / "build.stderr"
    result = run_process_tree([sys.executable, "-c", BUILD_CHILD], env, stdout, stderr, timeout_s,
                              period_s=0.05)
    if result["returncode"] != 0 or result["timed_out"]:
        why = "timed out" if result["timed_out"] else f"exited with status {result['returncode']}"
        raise StepFailed(f"cold base-model build {why}; stderr tail:\n{_tail(stderr)}")
    line = next((text for text in stdout.read_text().splitlines() if text.startswith("BENCH-RESULT ")), None)
    if line is None:
        raise StepFailed(f"cold base-model build printed no result; stdout tail:\n{_tail(stdout)}")
    child = json.loads(line.split(" ", 1)[1])
    # Linux reports ru_maxrss in KiB; take whichever of the kernel's figure and our sampling is larger.
    kernel_peak_mb = max(child["self_maxrss_kb"], child["children_maxrss_kb"]) / 1024
    return {"wall_s": result["wall_s"], "build_call_s": child["build_call_s"],
            "peak_rss_mb": max(kernel_peak_mb, result["peak_rss_mb"]), "path": child["path"]}


def ensure_base_model(env: dict, scratch: Path, timeout_s: float) -> None:
    """Make sure the base model is cached in ``env``'s FAIRPOOL_HOME (not timed)."""
    log = scratch / "warm.log"
    with log.open("wb") as fh:
        try:
            done = subprocess.run([str(FAIRPOOL), "base-model", "build"], env=env, cwd=ROOT,
                                  stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise StepFailed(f"`fairpool base-model build` timed out; output tail:\n{_tail(log)}") from exc
    if done.returncode != 0:
        raise StepFailed(f"`fairpool base-model build` exited with status {done.returncode}; "
                         f"output tail:\n{_tail(log)}")


def measure_demo(env: dict, scratch: Path, timeout_s: float) -> dict:
    out = scratch / "demo"
    stdout, stderr = scratch / "demo.stdout", scratch / "demo.stderr"
    result = run_process_tree([str(FAIRPOOL), "demo", "--out", str(out)], env, stdout, stderr, timeout_s)
    if result["returncode"] != 0 or result["timed_out"]:
        why = (f"did not finish within {timeout_s:.0f}s" if result["timed_out"]
               else f"exited with status {result['returncode']}")
        message = f"`fairpool demo` {why}; stderr tail:\n{_tail(stderr)}"
        if (out / "flower.log").exists():
            message += f"\n--- flower.log tail:\n{_tail(out / 'flower.log', 25)}"
        raise StepFailed(message)
    result["out"] = out
    return result


def _events(out: Path) -> list[dict]:
    path = out / "progress.jsonl"
    if not path.exists():
        raise StepFailed(f"the demo succeeded but wrote no {path}")
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def stage_times(events: list[dict]) -> dict:
    """Stage durations from the coordinator's progress events (seconds on its clock)."""

    def first(stage: str, where=lambda _e: True) -> float:
        for e in events:
            if e.get("stage") == stage and where(e):
                return float(e["t"])
        raise StepFailed(f"progress.jsonl has no {stage!r} event")

    def last(stage: str, where) -> float:
        for e in reversed(events):
            if e.get("stage") == stage and where(e):
                return float(e["t"])
        raise StepFailed(f"progress.jsonl has no completed {stage!r} event (done == total)")

    def finished(e: dict) -> bool:
        return "done" in e and "total" in e and e["done"] == e["total"]

    start, train0 = first("start"), first("train")
    train_end = last("train", finished)
    score0, coal0, done = first("score"), first("coalitions"), first("done")
    return {
        "stage_wait_for_nodes_s": train0 - start,
        "stage_training_s": train_end - train0,
        "stage_validation_s": score0 - train_end,
        "stage_scoring_s": coal0 - score0,
        "stage_valuation_s": done - coal0,
        "coordinator_last_event_s": max(float(e["t"]) for e in events),
    }


def per_owner_training(out: Path) -> dict[str, float]:
    path = out / "report.json"
    if not path.exists():
        raise StepFailed(f"the demo succeeded but wrote no {path}")
    report = json.loads(path.read_text())
    times = {o["name"]: float(o["metrics"]["train_seconds"])
             for o in report.get("owners", []) if "train_seconds" in (o.get("metrics") or {})}
    if not times:
        raise StepFailed(f"{path} has no owners[].metrics.train_seconds")
    return times


# --------------------------------------------------------------------------- recording


def machine_info() -> dict:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": _cpu_model(),
        "total_ram_mb": round(psutil.virtual_memory().total / 2**20),
        "python": platform.python_version(),
        "torch": version("torch"),
        "flwr": version("flwr"),
        "platform": platform.platform(),
        "loadavg_1_5_15": load,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def figure(value, unit: str, **extra) -> dict:
    if isinstance(value, float):
        value = round(value, 3)
    elif isinstance(value, dict):
        value = {k: round(v, 3) if isinstance(v, float) else v for k, v in value.items()}
    return {"value": value, "unit": unit, **extra}


def merge_results(figures: dict, context: dict) -> None:
    try:
        existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    except ValueError:
        print(f"warning: {RESULTS} was not valid JSON; starting afresh", file=sys.stderr)
        existing = {}
    if not isinstance(existing, dict):
        existing = {}
    for name, fig in figures.items():
        existing[name] = {**fig, **context}
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)


def summary_table(figures: dict) -> str:
    rows = [("figure", "value", "unit", "target", "ok")]
    for name, fig in figures.items():
        value = fig["value"]
        if isinstance(value, dict):
            for owner, v in value.items():
                rows.append((f"{name}[{owner}]", _fmt(v), fig["unit"], "", ""))
            continue
        target = fig.get("target")
        shown_target = ""
        if isinstance(target, dict) and "max" in target:
            shown_target = f"< {target['max']:g}"
        elif isinstance(target, dict) and "min" in target:
            shown_target = f">= {target['min']:g}"
        ok = fig.get("meets_target")
        rows.append((name, _fmt(value), fig["unit"], shown_target, "" if ok is None else ("yes" if ok else "NO")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i == 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


# --------------------------------------------------------------------------- main


def model_and_demo_figures(args: argparse.Namespace, scratch: Path) -> dict[str, dict]:
    """Cold base-model build (unless skipped), then the demo: wall time, memory, stages."""
    figures: dict[str, dict] = {}
    env = {**os.environ, **BASE_ENV}
    if args.skip_cold_build:
        print("ensuring the base model is cached in the usual FAIRPOOL_HOME (not timed) ...", flush=True)
        ensure_base_model(env, scratch, args.timeout)
    else:
        home = scratch / "home"
        home.mkdir()
        env["FAIRPOOL_HOME"] = str(home)
        print(f"cold build of the embedded base model in a fresh FAIRPOOL_HOME ({home}) ...", flush=True)
        build = measure_cold_build(home, scratch, args.timeout)
        figures["base_model_build_s"] = figure(build["wall_s"], "s", note=(
            "wall time of a fresh interpreter building the base model from scratch, imports included"))
        figures["base_model_build_call_s"] = figure(build["build_call_s"], "s", note=(
            "time inside build_base_model() alone, in that same interpreter"))
        figures["base_model_build_peak_rss_mb"] = figure(build["peak_rss_mb"], "MiB")
        print(f"  built in {build['wall_s']:.1f}s, peak RSS {build['peak_rss_mb']:.0f} MiB", flush=True)

    print("running `fairpool demo` with the cached base model ...", flush=True)
    demo = measure_demo(env, scratch, args.timeout)
    pss = "" if demo["peak_pss_mb"] is None else f", PSS {demo['peak_pss_mb']:.0f} MiB"
    print(f"  finished in {demo['wall_s']:.1f}s, peak tree RSS {demo['peak_rss_mb']:.0f} MiB{pss} "
          f"({demo['peak_processes']} processes at most, {demo['samples']} samples)", flush=True)
    print("  processes seen: " + ", ".join(f"{n}×{c}" for n, c in demo["processes_seen"].items()), flush=True)
    if demo["leftover_pids"]:
        print(f"  warning: processes still alive after the demo: {demo['leftover_pids']}", file=sys.stderr)
    stages = stage_times(_events(demo["out"]))
    owners = per_owner_training(demo["out"])

    wall_ok = demo["wall_s"] < DEMO_WALL_TARGET_S
    rss_ok = demo["peak_rss_mb"] < DEMO_RSS_TARGET_MB
    figures["demo_wall_s"] = figure(demo["wall_s"], "s", target={"max": DEMO_WALL_TARGET_S}, meets_target=wall_ok)
    figures["demo_peak_rss_mb"] = figure(demo["peak_rss_mb"], "MiB", target={"max": DEMO_RSS_TARGET_MB},
                                         meets_target=rss_ok, note=(
        f"peak of the RSS summed over the whole process tree, sampled every {SAMPLE_PERIOD_S}s "
        "(shared pages counted once per process, so an upper bound)"))
    if demo["peak_pss_mb"] is not None:
        figures["demo_peak_pss_mb"] = figure(demo["peak_pss_mb"], "MiB", note=(
            "peak of the PSS summed over the same tree: shared pages split among their processes, "
            "so closer to the memory the demo really occupies; informational, no target"))
    figures["demo_peak_processes"] = figure(demo["peak_processes"], "processes",
                                            processes_seen=demo["processes_seen"])
    figures["demo_meets_target"] = figure(wall_ok and rss_ok, "bool", target={
        "wall_s_max": DEMO_WALL_TARGET_S, "peak_rss_mb_max": DEMO_RSS_TARGET_MB}, meets_target=wall_ok and rss_ok)
    for name in ("stage_wait_for_nodes_s", "stage_training_s", "stage_validation_s", "stage_scoring_s",
                 "stage_valuation_s"):
        figures[name] = figure(stages[name], "s")
    figures["training_per_owner_s"] = figure(owners, "s")
    figures["flower_overhead_s"] = figure(demo["wall_s"] - stages["coordinator_last_event_s"], "s", note=(
        "demo wall time minus the coordinator's last progress event: CLI start-up, job preparation, "
        "Flower/Ray start-up before the coordinator's clock starts, and teardown"))
    figures.update(resume_figures(env, scratch, args.timeout, demo["out"]))
    return figures


def resume_figures(env: dict, scratch: Path, timeout_s: float, out: Path) -> dict[str, dict]:
    """The same demo command again: it resumes from the ledger (no owner trains, nothing recomputed)."""
    first = json.loads((out / "report.json").read_text())
    print("re-running `fairpool demo` into the same directory (resumes from the ledger) ...", flush=True)
    again = measure_demo(env, scratch, timeout_s)
    events = _events(out)
    last_start = max(i for i, e in enumerate(events) if e.get("stage") == "start")
    rerun = events[last_start:]
    trainings = sum(1 for e in rerun if e.get("stage") == "train" and "adapter accepted" in e.get("message", ""))
    second = json.loads((out / "report.json").read_text())
    same = [g["values"] for g in first["games"]] == [g["values"] for g in second["games"]]
    if trainings or not same:
        raise StepFailed(f"the re-run did not resume: {trainings} owner(s) trained, same values: {same}")
    print(f"  resumed in {again['wall_s']:.1f}s, 0 owners retrained, same values", flush=True)
    ok = again["wall_s"] <= RESUME_WALL_TARGET_S
    return {"demo_resume_wall_s": figure(again["wall_s"], "s", trainings=trainings, same_values=same,
                                         target={"max": RESUME_WALL_TARGET_S}, meets_target=ok, note=(
        "`fairpool demo` re-run into the same --out after it finished: the ledger holds every adapter and the "
        "signed report, so Flower is not started and nothing is loaded or recomputed (issue 14 #4)"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-cold-build", action="store_true",
                        help="skip the cold build; run the demo with the usual FAIRPOOL_HOME's cached base model")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed for each step (default 900)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (printed) for inspection")
    parser.add_argument("--no-write", action="store_true", help="print the figures without updating results.json")
    parser.add_argument("--with-fidelity", action="store_true",
                        help="also time the fidelity study (4 owners, 1 order: minutes on 2 cores)")
    parser.add_argument("--with-midsize", action="store_true",
                        help="also run `fairpool value` on a ~26 M-parameter Llama, 4 owners × 128 pairs "
                             "(about 10 minutes on 2 cores)")
    parser.add_argument("--only-midsize", action="store_true", help="run only the mid-size figure")
    parser.add_argument("--only-fidelity", action="store_true", help="run only the fidelity study's timing")
    parser.add_argument("--only-valuation", action="store_true",
                        help="run only the valuation and decoding micro-benchmarks (no Flower demo)")
    args = parser.parse_args(argv)

    if not FAIRPOOL.exists():
        print(f"error: {FAIRPOOL} not found; run `make venv` first", file=sys.stderr)
        return 2
    machine = machine_info()  # before measuring: the load average says how busy the machine was
    scratch = Path(tempfile.mkdtemp(prefix="fairpool-bench-"))
    figures: dict[str, dict] = {}
    try:
        only = args.only_midsize or args.only_fidelity
        if not only:
            print("valuation-engine micro-benchmarks ...", flush=True)
            figures.update(valuation.measure())
            print("composed-decoding micro-benchmark ...", flush=True)
            figures.update(decoding.measure())
            print("publication service under load (TLS on 127.0.0.1) ...", flush=True)
            figures.update(publication.measure(scratch / "publication"))
        if not (args.only_valuation or only):
            figures.update(model_and_demo_figures(args, scratch))
        if (args.with_fidelity and not args.only_midsize) or args.only_fidelity:
            print("fidelity study on the embedded market (several minutes) ...", flush=True)
            figures.update(fidelity.measure({**os.environ, **BASE_ENV}, args.timeout * 2))
        if args.with_midsize or args.only_midsize:
            print("mid-size model: `fairpool value` on a ~26 M-parameter Llama (about 10 minutes) ...", flush=True)
            figures.update(midsize.measure({**os.environ, **BASE_ENV}, scratch, args.timeout * 2))
        why_not = gpu.gpu_available()
        if why_not:
            print(f"GPU benchmark skipped: {why_not} (benchmarks/gpu.py runs it where a GPU exists)", flush=True)
        elif not (args.only_valuation or only):
            print("GPU benchmark on a SmolLM-135M-shaped Llama ...", flush=True)
            figures.update(gpu.measure(scratch / "gpu"))
    except StepFailed as exc:
        print(f"\nbenchmark FAILED: {exc}", file=sys.stderr)
        print("results.json left unchanged", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"scratch kept at {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    context = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "mode": "only-valuation" if args.only_valuation else "only-midsize" if args.only_midsize else
                       "only-fidelity" if args.only_fidelity else
                       ("skip-cold-build" if args.skip_cold_build else "cold-build"),
               "machine": machine}
    if not args.no_write:
        merge_results(figures, context)
    print()
    print(summary_table(figures))
    m = context["machine"]
    print(f"\nmachine: {m['cpus_usable']}/{m['cpu_count']} CPUs ({m['cpu_model']}), {m['total_ram_mb']} MiB RAM, "
          f"Python {m['python']}, torch {m['torch']}, flwr {m['flwr']}; load average at start {m['loadavg_1_5_15']}")
    print(f"measured at {context['measured_at']}" + ("" if args.no_write else f"; written to {RESULTS}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
