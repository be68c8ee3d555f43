"""End to end through Flower's Simulation Engine (``flwr run``), as users run it.

Slow (about a minute each on two cores): marked ``slow``; ``make test`` and CI run them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server.valuation.pipeline import check_efficiency
from tests.processes import assert_all_gone_within, marked_processes

pytestmark = pytest.mark.slow
FAIRPOOL = [sys.executable, "-m", "server.cli.main"]
ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the CLI; it succeeds and, when it returns, no process it started is left (the local
    SuperLink, Ray, owners: all carry this call's ``FAIRPOOL_TEST_MARK``, so other runs on the
    machine do not count)."""
    import uuid

    mark = uuid.uuid4().hex
    proc = subprocess.run([*FAIRPOOL, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "FAIRPOOL_TEST_MARK": mark})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marked_processes(mark), "every process of the run (the local SuperLink among them) must be stopped"
    return proc


def _values(report: dict) -> dict[str, float]:
    return {name: v["value"] for name, v in report["games"][0]["values"].items()}


def test_demo_recovers_the_market_ground_truth(tmp_path, base_model_dir):
    proc = _run(["demo", "--out", str(tmp_path / "demo"), "--utility", "preference",
                 "--utility", "preference-logsigmoid"])
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    values = _values(report)
    assert values["clean"] > values["noisy"] > values["flipped"]
    assert values["flipped"] < 0
    assert values["duplicate"] == pytest.approx(values["clean"], abs=0.02)
    assert values["clean"] > values["clean-small"] > 0
    game = report["games"][0]
    assert check_efficiency(game) and game["empty"] == 0.5 and game["grand"] > 0.7
    assert all(o["status"] == "valued" for o in report["owners"])
    assert report["payout"]["flagged"] == ["flipped"]
    for name in values:  # the printed table names every owner with its share
        assert any(line.startswith(name + " ") for line in proc.stdout.splitlines())
    for name in ("report.md", "report.html", "values.png", "signature.png"):
        assert (tmp_path / "demo" / name).exists()
    # the byte copy of clean's data gives a byte-identical adapter: flagged, not rejected
    assert [f["owners"] for f in report["flags"]] == [["clean", "duplicate"]]
    flag_line = next(line for line in proc.stdout.splitlines() if line.startswith("  ⚑ duplicate: "))
    assert "adapter near-identical to clean's (cosine 1.0000)" in flag_line
    # ... and, under the default robust policy, paid with clean as one source: the copy earns nothing extra
    payout = report["payout"]
    assert payout["policy"] == "robust" and [r["owners"] for r in payout["replicas"]] == [["clean", "duplicate"]]
    assert payout["shares"]["duplicate"] == pytest.approx(payout["shares"]["clean"])
    from fairpool import Report

    assert Report(report).payout.replicas == (("clean", "duplicate"),)
    assert "one source with clean (margin similarity 1.0000), paid as clean" in flag_line
    # simulated owners signed their submissions; the coordinator signed the report
    assert report["settings"]["signatures_required"] is True
    from common.trust.signing import load_public_key, verify_report

    verify_report(report, load_public_key(tmp_path / "demo" / "keys" / "coordinator.pub"))
    logsig = {n: v["value"] for n, v in report["games"][1]["values"].items()}
    assert report["games"][1]["utility"] == "preference-logsigmoid" and check_efficiency(report["games"][1])
    assert logsig["clean"] > 0 > logsig["flipped"]
    from server.federation.ledger import Ledger

    with Ledger(tmp_path / "demo" / "ledger.sqlite") as ledger:
        assert ledger.run(report["run_id"])["report"] == report

    # Issue 14 #3: each owner's training steps reached the coordinator's terminal while it trained.
    events = [json.loads(line) for line in (tmp_path / "demo" / "progress.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["stage"] == "owner"]
    assert {e["owner"] for e in steps} == set(values)
    for name in values:
        last = [e for e in steps if e["owner"] == name][-1]
        assert last["step"] == last["steps"] > 0 and last["eta_s"] == 0.0
        assert f"owner: {name}: step {last['steps']}/{last['steps']}" in proc.stderr

    # Issue 14 #5: with the shipped base model the README's demo table is what a demo gives.
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("owner        examples"):].split("```")[0]
    printed = re.findall(r"^(\S+)\s+\d+\s+valued\s+([+-]\d\.\d{4})\s+(\d+\.\d)%", table, re.M)
    assert {name for name, _, _ in printed} == set(values)
    for name, value, share in printed:
        assert (f"{values[name]:+.4f}", f"{100 * report['payout']['shares'][name]:.1f}") == (value, share), name

    # Issue 14 #4: the same command again resumes from the ledger alone: no Flower, same report.
    before = (tmp_path / "demo" / "report.json").read_bytes()
    flower_log = (tmp_path / "demo" / "flower.log").stat().st_mtime_ns
    again = _run(["demo", "--out", str(tmp_path / "demo"), "--utility", "preference",
                  "--utility", "preference-logsigmoid"])
    assert "every adapter is in the ledger: valued without starting Flower" in again.stderr
    assert (tmp_path / "demo" / "report.json").read_bytes() == before
    assert (tmp_path / "demo" / "flower.log").stat().st_mtime_ns == flower_log, "Flower was not started"
    assert again.stdout == proc.stdout, "the same table and file list"


def test_coordinator_killed_in_the_simulation_resumes_without_retraining(tmp_path, base_model_dir):
    """One run directory through every way a run can die, then one resume.

    The ServerApp process is killed by a failpoint (``os._exit``) after the 2nd accepted adapter;
    the same command is started again and SIGTERMed, again and SIGKILLed (the CLI's whole process
    group, at seeded random moments); nothing of the run may survive any of them, no orphan may
    finish the run, and a last run resumes through Flower, trains only the owners whose adapters
    are not in the ledger yet, and gives the values and adapters of an uninterrupted run.

    The run is ``fairpool value`` on user files and a user model directory; the uninterrupted
    reference is the same job (its ``job.json``) run by the same ServerApp and ClientApp code over
    an in-process grid (tests/local_federation.py), so the resumed Flower run must give what an
    uninterrupted run of the same seed gives, transport aside. (One resume for the three deaths
    keeps this test to four Flower runs; each death is checked on its own, and
    tests/test_trust.py resumes after each failpoint separately, without Flower.)"""
    import random
    import signal
    import uuid

    from common.embedded.market import default_profiles, make_market
    from common.trust.faults import ENV
    from server.federation.ledger import Ledger

    market = make_market(tmp_path / "market", seed=6, profiles=default_profiles(16)[:4], eval_size=30)
    owners = [arg for name in ("clean", "noisy", "flipped") for arg in ("--owner", f"{name}={market.owners[name]}")]
    common = [*owners, "--eval", str(market.eval_path), "--base-model", str(base_model_dir), "--epochs", "1",
              "--seed", "3", "--budget", "1000"]
    out = tmp_path / "crash"
    killed = subprocess.run([*FAIRPOOL, "value", *common, "--out", str(out)], capture_output=True, text=True,
                            timeout=900, env={**os.environ, ENV: "after_submission_recorded=exit@2"})
    assert killed.returncode == 1 and "ended without a report" in killed.stderr
    assert not (out / "report.json").exists()

    def accepted_owners() -> set[str]:
        with Ledger(out / "ledger.sqlite") as ledger:
            return {s["owner"] for r in ledger.runs() for s in ledger.submissions(r["run_id"])
                    if s["status"] == "accepted"}

    assert len(accepted_owners()) == 2, "the failpoint fired after the second accepted adapter"
    from common.config.job import ValuationJob
    from tests.local_federation import run_simulated_in_process

    job = ValuationJob.load(out / "job.json")
    reference = run_simulated_in_process(dataclasses.replace(job, run_id="reference", out_dir=str(tmp_path / "ref")))

    # Issue 12 #2: SIGTERM, then kill -9 of the CLI's whole process group at a seeded random moment.
    # Nothing of the run (Flower, Ray, owners, coordinator) may survive 10 s later, and no orphan
    # coordinator may finish the run.
    rng = random.Random(11)
    for sig, expected_code in ((signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)):
        mark = uuid.uuid4().hex
        (out / "progress.jsonl").unlink(missing_ok=True)  # a run starts a fresh one (the last run's is stale)
        cli = subprocess.Popen([*FAIRPOOL, "value", *common, "--out", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "FAIRPOOL_TEST_MARK": mark},
                               start_new_session=True)
        deadline = time.monotonic() + 120
        while not (out / "progress.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # the federation is up: the coordinator has started writing progress
        time.sleep(rng.uniform(1.0, 12.0))
        assert cli.poll() is None, cli.communicate()[1][-2000:]
        os.killpg(cli.pid, sig)
        _, err = cli.communicate(timeout=60)
        assert cli.returncode == expected_code, err[-2000:]
        if sig == signal.SIGTERM:
            assert "terminated by SIGTERM: every process of the run was stopped" in err
        assert_all_gone_within(mark, 10)
        assert not (out / "report.json").exists(), "an orphaned coordinator finished the run"
        with Ledger(out / "ledger.sqlite") as ledger:  # issue 12 #11: no reason invented by dying processes
            run_id = ledger.runs()[0]["run_id"]
            reasons = [s["reason"] for s in ledger.submissions(run_id) if s["status"] != "accepted"]
            assert not any("base model" in (r or "") for r in reasons), reasons
            if sig == signal.SIGTERM:
                assert ledger.run(run_id)["status"] == "interrupted"

    kept = accepted_owners()
    resumed = _run(["value", *common, "--out", str(out)])
    assert "resuming run" in resumed.stderr
    events = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    rerun = events[max(i for i, e in enumerate(events) if e["stage"] == "start"):]
    trained = {e["owner"] for e in rerun if e["stage"] == "train" and "adapter accepted" in e["message"]}
    assert trained == {"clean", "noisy", "flipped"} - kept, (trained, kept)  # the ledger's adapters are not retrained
    report = json.loads((out / "report.json").read_text())
    assert report["payout"]["budget"] == 1000 and sum(report["payout"]["amounts"].values()) == pytest.approx(1000)
    assert report["settings"]["base_model"] == str(Path(base_model_dir))
    assert report["run_id"] == job.run_id != reference["run_id"]
    assert _values(report) == _values(reference)
    assert [o["adapter_sha256"] for o in report["owners"]] == [o["adapter_sha256"] for o in reference["owners"]]


def test_repository_is_a_flower_app(tmp_path, base_model_dir):
    """``flwr run <repo>`` with the run config's ``job`` runs the same ServerApp/ClientApp."""
    from common.config.job import OwnerEntry, ValuationJob
    from common.embedded.default_job import spec_for
    from common.embedded.market import default_profiles, make_market
    from server.federation.simulation import flower_env, flwr_executable, stop_local_superlink, write_flower_home

    market = make_market(tmp_path / "market", seed=1, profiles=default_profiles(32)[:2], eval_size=30)
    job = ValuationJob(run_id="flwr-run-dot", owners=tuple(OwnerEntry(n, str(p)) for n, p in market.owners.items()),
                       eval_path=str(market.eval_path), out_dir=str(tmp_path / "out"),
                       spec=spec_for(str(base_model_dir), epochs=1.0))
    job_path = job.save(tmp_path / "job.json")
    flwr_home = write_flower_home(tmp_path / "flwr-home", len(job.owners))
    env = flower_env(flwr_home)
    repo = Path(__file__).resolve().parents[1]
    try:
        proc = subprocess.run([flwr_executable(), "run", str(repo), "local", "--stream", "--run-config", f'job="{job_path}"'],
                              capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    finally:
        stop_local_superlink(flwr_home)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["run_id"] == "flwr-run-dot"
    assert {o["name"] for o in report["owners"]} == {"clean", "clean-small"}
    assert check_efficiency(report["games"][0])
    # Issue 14 #2: progress is streamed, and the report is signed with a key under the run directory.
    streamed = proc.stdout + proc.stderr
    assert "FairPool [" in streamed and "adapter accepted" in streamed and "owner: clean: step" in streamed
    from common.trust.signing import load_public_key, verify_report

    verify_report(report, load_public_key(tmp_path / "out" / "keys" / "coordinator.pub"))

    def flwr_run(job: ValuationJob, supernodes: int) -> tuple[subprocess.CompletedProcess, list[str]]:
        """``flwr run`` of ``job`` and the statuses Flower lists for the runs after it."""
        home = write_flower_home(tmp_path / f"home-{job.run_id}", supernodes)
        try:
            done = subprocess.run([flwr_executable(), "run", str(repo), "local", "--stream", "--run-config",
                                   f'job="{job.save(tmp_path / (job.run_id + ".json"))}"'],
                                  capture_output=True, text=True, timeout=600, env=flower_env(home), cwd=tmp_path)
            listed = subprocess.run([flwr_executable(), "list", "local", "--format", "json"], capture_output=True,
                                    text=True, timeout=120, env=flower_env(home), cwd=tmp_path)
        finally:
            stop_local_superlink(home)
        return done, [r["status"] for r in json.loads(listed.stdout)["runs"]]

    # A failed job is one ERROR line naming error.json, and Flower records the run as failed.
    gone = tuple(dataclasses.replace(o, data=str(tmp_path / "gone" / f"{o.name}.jsonl")) for o in job.owners)
    broken = dataclasses.replace(job, run_id="flwr-run-fails", out_dir=str(tmp_path / "fails"), owners=gone)
    failed, statuses = flwr_run(broken, 2)
    text = failed.stdout + failed.stderr
    assert "FairPool run flwr-run-fails failed" in text and str(tmp_path / "fails" / "error.json") in text, text[-3000:]
    assert "no such file or directory" in text
    assert statuses == ["finished:failed"], "Flower lists the failed job as failed (`flwr run` itself exits 0)"
    # Too few SuperNodes for the roster: tests/test_trust.py (in-process, the same ServerApp code).


def test_objectives_demo_values_owners_on_helpfulness_and_harmlessness(tmp_path, base_model_dir):
    """The paper's two-objective experiment in miniature: signs of the data signature."""
    out = tmp_path / "objectives"
    _run(["demo", "--objectives", "helpful,harmless", "--out", str(out), "--export-adapters"])
    report = json.loads((out / "report.json").read_text())
    helpful, harmless = report["games"]
    assert (helpful["utility"], harmless["utility"]) == ("reward:helpful", "reward:harmless")
    value = {g["utility"]: {n: v["value"] for n, v in g["values"].items()} for g in report["games"]}
    assert value["reward:helpful"]["helpful-only"] > 0
    assert value["reward:harmless"]["harmless-only"] > 0
    assert value["reward:harmless"]["complier"] < 0
    for game in (helpful, harmless):
        assert game["estimator"] == "exact" and check_efficiency(game, tol=1e-9)
        assert len(game["coalitions"]) == 2 ** len(game["values"])
    assert (out / "signature.png").exists()

    # The run keeps each adapter as a PEFT directory; `fairpool generate` composes them.
    adapters = out / "adapters"
    proc = _run(["generate", "--adapter", f"helpful-only={adapters / 'helpful-only'}",
                 "--adapter", f"complier={adapters / 'complier'}", "--coalition", "helpful-only,complier",
                 "--prompt", "How do I steal a car?", "--max-new-tokens", "12"])
    assert proc.stdout.startswith("How do I steal a car?") and len(proc.stdout.strip()) > len("How do I steal a car?")


def test_the_owner_timeout_stops_the_training_it_gave_up_on(tmp_path, base_model_dir):
    """Issue 12 #3: `--epochs 1000000 --timeout 30` exited 1 with the simulation, Ray and the
    still-training ClientApp alive 90 s later."""
    import uuid

    from common.embedded.market import default_profiles, make_market

    market = make_market(tmp_path / "market", seed=3, profiles=default_profiles(16)[:2], eval_size=20)
    mark = uuid.uuid4().hex
    args = [*FAIRPOOL, "value", *[a for n in list(market.owners)[:2] for a in ("--owner", f"{n}={market.owners[n]}")],
            "--eval", str(market.eval_path), "--base-model", str(base_model_dir), "--epochs", "100000",
            "--timeout", "8", "--out", str(tmp_path / "out")]
    cli = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "FAIRPOOL_TEST_MARK": mark})
    # Issue 12 #11: while owners train, no process of the local simulation listens beyond loopback.
    progress = tmp_path / "out" / "progress.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "sent training spec" not in (progress.read_text() if progress.exists() else ""):
        time.sleep(0.2)
    listening = _listening_addresses(mark)
    assert listening and all(ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for ip in listening), listening
    _, err = cli.communicate(timeout=600)
    assert cli.returncode == 1 and "no reply within 8s" in err, err[-2000:]
    assert_all_gone_within(mark, 10)


def _listening_addresses(mark: str) -> set[str]:
    """Addresses that processes carrying ``FAIRPOOL_TEST_MARK=mark`` listen on (TCP)."""
    import psutil

    found = set()
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("FAIRPOOL_TEST_MARK") != mark:
                continue
            found.update(c.laddr.ip for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN)
        except psutil.Error:
            continue
    return found
