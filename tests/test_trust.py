"""Fault injection against the coordinator: signatures, replays, bad adapters, dropouts, crashes.

Each test runs the real ClientApp and the real coordinator over :mod:`tests.local_federation`
and asserts the outcome: who was valued, the recorded reason, what the ledger holds, how
many owners trained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.data import load_preferences, save_preferences_jsonl
from common.trust import faults
from common.trust.digest import tensors_sha256
from common.trust.signing import SubmissionClaim, load_private_key, sign_claim, verify_report
from server.cli.main import main as cli_main
from server.federation.ledger import Ledger
from server.federation.run import ERROR_FILE, LEDGER_FILE
from tests.local_federation import Federation, make_federation, replace_reply, run, simulated_nodes

ROOT = Path(__file__).resolve().parents[1]
OWNERS = ("clean", "clean-small", "flipped")


@pytest.fixture(scope="module")
def small_market(default_market, tmp_path_factory):
    """Three owners of 32 examples and 40 held-out pairs: each training takes about a second."""
    out = tmp_path_factory.mktemp("small-market")
    owners = {}
    for name in OWNERS + ("noisy",):
        examples, _ = load_preferences(default_market.owners[name])
        owners[name] = out / f"{name}.jsonl"
        save_preferences_jsonl(examples[:32], owners[name])
    evaluation, _ = load_preferences(default_market.eval_path)
    save_preferences_jsonl(evaluation[:40], out / "eval.jsonl")
    return owners, out / "eval.jsonl"


pytestmark = pytest.mark.usefixtures("no_failpoints")


def _federation(tmp_path, fast_spec, small_market, **kw):
    owners, eval_path = small_market
    return make_federation(tmp_path, fast_spec, {n: owners[n] for n in OWNERS}, eval_path, **kw)


def _owner(report, name):
    return next(o for o in report["owners"] if o["name"] == name)


def _resign(fed, owner, reply, tensors, spec_sha256=None, key_path=None):
    """What a (malicious or broken) owner would send: its own valid signature over ``tensors``."""
    meta = dict(reply.content["meta"])
    digest = tensors_sha256(tensors)
    claim = SubmissionClaim(meta["run_id"], meta["nonce"], owner, digest, int(meta["num_examples"]),
                            spec_sha256 or meta["spec_sha256"])
    config = next(c for c in fed.node_configs if c["owner-name"] == owner)
    key = load_private_key(key_path or config["signing-key"])
    return replace_reply(reply, {"sha256": digest, "signature": sign_claim(key, claim),
                                 "spec_sha256": claim.spec_sha256}, tensors)


def _tensors(reply):
    return {k: a.numpy().copy() for k, a in reply.content["adapter"].items()}


def test_signed_run_values_everyone_and_publishes_a_verifiable_report(tmp_path, fast_spec, small_market):
    fed = _federation(tmp_path, fast_spec, small_market)
    report, grid = run(fed)
    assert report is not None and grid.trainings == 3
    assert [o["status"] for o in report["owners"]] == ["valued"] * 3
    assert report["settings"]["signatures_required"] is True
    on_disk = json.loads((Path(fed.job.out_dir) / "report.json").read_text())
    coordinator_pub = load_private_key(fed.job.coordinator_key).public_key()
    verify_report(on_disk, coordinator_pub)  # raises if the file is not what the coordinator signed
    with Ledger(Path(fed.job.out_dir) / LEDGER_FILE) as ledger:
        stored = ledger.stored_adapters(fed.job.run_id)
        assert sorted(stored) == sorted(OWNERS)
        assert [s["status"] for s in ledger.submissions(fed.job.run_id)] == ["accepted"] * 3
        assert {o["status"] for o in ledger.owners(fed.job.run_id)} == {"valued"}
    # sealed at rest: the raw float bytes of an adapter do not appear in the ledger file
    raw = (Path(fed.job.out_dir) / LEDGER_FILE).read_bytes()
    digest, blob, _meta = stored["clean"]
    assert _owner(report, "clean")["adapter_sha256"] == digest
    first_tensor = next(iter(_decrypted(fed, "clean").values()))
    assert first_tensor.tobytes()[:64] not in raw and first_tensor.tobytes()[:64] not in blob


def _decrypted(fed, owner):
    from common.trust.sealing import load_storage_key, tensors_from_bytes, unseal
    from server.federation.admission import sealing_context

    with Ledger(Path(fed.job.out_dir) / LEDGER_FILE) as ledger:
        digest, blob, _ = ledger.stored_adapters(fed.job.run_id)[owner]
    key = load_storage_key(fed.job.storage_key)
    return tensors_from_bytes(unseal(key, blob, sealing_context(fed.job.run_id, owner, digest)))


def test_owner_tampering_with_the_report_is_caught_by_verify_report(tmp_path, fast_spec, small_market, capsys):
    fed = _federation(tmp_path, fast_spec, small_market, export_adapters=True)
    run(fed)
    path = Path(fed.job.out_dir) / "report.json"
    pub = tmp_path / "keys" / "coordinator.pub"
    assert cli_main(["verify-report", str(path), "--coordinator-key", str(pub)]) == 0
    adapter_dir = Path(fed.job.out_dir) / "adapters" / "clean"
    assert cli_main(["verify-report", str(path), "--coordinator-key", str(pub),
                     "--owner", "clean", "--adapter", str(adapter_dir)]) == 0
    text = path.read_text()
    share = json.loads(text)["payout"]["shares"]["clean"]
    tampered = text.replace(repr(share), repr(share)[:-1] + str((int(repr(share)[-1]) + 1) % 10), 1)
    assert tampered != text
    path.write_text(tampered)
    assert cli_main(["verify-report", str(path), "--coordinator-key", str(pub)]) == 1


@pytest.mark.parametrize("fault", ["corrupted", "nan", "wrong_rank", "bad_signature", "spec_mismatch", "huge_norm"])
def test_bad_submissions_are_rejected_with_their_reason(tmp_path, fast_spec, small_market, fault):
    fed = _federation(tmp_path, fast_spec, small_market, min_owners=2)
    victim = "clean-small"

    def intercept(node, reply):
        if dict(reply.content["meta"])["owner"] != victim:
            return reply
        tensors = _tensors(reply)
        name = sorted(tensors)[0]
        if fault == "corrupted":  # bytes changed in transit, after the owner signed
            tensors[name].flat[0] += 1.0
            return replace_reply(reply, tensors=tensors)
        if fault == "nan":
            tensors[name].flat[0] = np.nan
            return _resign(fed, victim, reply, tensors)
        if fault == "wrong_rank":
            tensors = {k: (v[:4] if "lora_A" in k else v[:, :4]) for k, v in tensors.items()}
            return _resign(fed, victim, reply, {k: np.ascontiguousarray(v) for k, v in tensors.items()})
        if fault == "bad_signature":  # signed by someone else's key
            return _resign(fed, victim, reply, tensors, key_path=tmp_path / "keys" / "clean.key")
        if fault == "spec_mismatch":
            return _resign(fed, victim, reply, tensors, spec_sha256="f" * 64)
        if fault == "huge_norm":
            return _resign(fed, victim, reply, {k: v * 1e4 for k, v in tensors.items()})
        raise AssertionError(fault)

    report, _grid = run(fed, intercept)
    expected = {"corrupted": "digest does not match", "nan": "non-finite", "wrong_rank": "LoRA rank 4",
                "bad_signature": "bad signature", "spec_mismatch": "spec mismatch",
                "huge_norm": "norm"}[fault]
    victim_row = _owner(report, victim)
    assert victim_row["status"] == "rejected" and expected in victim_row["reason"]
    assert all(_owner(report, n)["status"] == "valued" for n in OWNERS if n != victim)
    assert victim not in report["games"][0]["values"] and victim not in report["payout"]["shares"]
    with Ledger(Path(fed.job.out_dir) / LEDGER_FILE) as ledger:
        rows = [s for s in ledger.submissions(fed.job.run_id) if s["owner"] == victim]
        assert rows[-1]["status"] == "rejected" and expected in rows[-1]["reason"]
        assert victim not in ledger.stored_adapters(fed.job.run_id)


def test_unknown_owner_is_refused_and_listed(tmp_path, fast_spec, small_market):
    owners, _ = small_market
    fed = _federation(tmp_path, fast_spec, small_market, intruders={"mallory": owners["noisy"]})
    report, _ = run(fed)
    assert [o["name"] for o in report["owners"]] == list(OWNERS)
    assert report["refused"] == [{"owner": "mallory", "reason": "unknown owner: not on this run's allowlist"}]


def test_a_replayed_submission_is_refused(tmp_path, fast_spec, small_market):
    first = _federation(tmp_path, fast_spec, small_market, run_id="run-1")
    captured = {}

    def capture(node, reply):
        captured.setdefault(dict(reply.content["meta"])["owner"], reply)
        return reply

    run(first, capture)
    second = _federation(tmp_path, fast_spec, small_market, run_id="run-2", out=tmp_path / "out-2", min_owners=2)

    def replay(node, reply):  # clean's reply to run-1, delivered as the answer to run-2's request
        if dict(reply.content["meta"])["owner"] == "clean":
            old = captured["clean"]
            return _as_answer_to(old, reply)
        return reply

    report, _ = run(second, replay)
    row = _owner(report, "clean")
    assert row["status"] == "rejected" and row["reason"].startswith("replay")


def _as_answer_to(old, new):
    """``old``'s content, routed as the reply to the request ``new`` answers."""
    from flwr.app import Message

    from tests.local_federation import _original

    return Message(content=old.content, reply_to=_original(new))


def test_a_reused_nonce_is_a_replay(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.start_run("r", "{}")
        ledger.issue_nonce("r", "n-1")
        assert ledger.use_nonce("r", "n-1") is None
        assert "already used" in ledger.use_nonce("r", "n-1")
        assert "never issued" in ledger.use_nonce("r", "n-2")
        ledger.issue_nonce("other", "n-3")
        assert "belongs to run other" in ledger.use_nonce("r", "n-3")


def test_a_client_that_never_answers_is_a_recorded_dropout(tmp_path, fast_spec, small_market):
    fed = _federation(tmp_path, fast_spec, small_market, owner_timeout_s=1.0, min_owners=2)
    silent = lambda node, reply: None if dict(reply.content["meta"])["owner"] == "flipped" else reply  # noqa: E731
    report, _ = run(fed, silent)
    row = _owner(report, "flipped")
    assert row["status"] == "rejected" and "no reply within" in row["reason"]
    with Ledger(Path(fed.job.out_dir) / LEDGER_FILE) as ledger:
        assert [s["status"] for s in ledger.submissions(fed.job.run_id) if s["owner"] == "flipped"] == ["missing"]


def test_quorum_not_met_ends_with_a_clear_error_and_keeps_what_arrived(tmp_path, fast_spec, small_market):
    fed = _federation(tmp_path, fast_spec, small_market, owner_timeout_s=1.0, min_owners=3)
    silent = lambda node, reply: None if dict(reply.content["meta"])["owner"] == "flipped" else reply  # noqa: E731
    report, _ = run(fed, silent)
    out = Path(fed.job.out_dir)
    assert report is None and not (out / "report.json").exists()
    assert "fewer than the required 3" in json.loads((out / ERROR_FILE).read_text())["error"]
    with Ledger(out / LEDGER_FILE) as ledger:
        assert sorted(ledger.stored_adapters(fed.job.run_id)) == ["clean", "clean-small"]
        assert ledger.run(fed.job.run_id)["status"] == "failed"
        owners = {o["name"]: o for o in ledger.owners(fed.job.run_id)}
        assert owners["flipped"]["status"] == "rejected" and "no reply within" in owners["flipped"]["reason"]
        assert owners["clean"]["status"] == "accepted" and owners["clean"]["public_key"]


def test_client_crash_mid_training_is_recorded_and_a_rerun_trains_only_that_owner(
        tmp_path, fast_spec, small_market, monkeypatch):
    fed = _federation(tmp_path, fast_spec, small_market, min_owners=2)
    monkeypatch.setenv(faults.ENV, "client_training=raise@2")  # the second owner's training blows up
    report, grid = run(fed)
    crashed = [o for o in report["owners"] if o["status"] == "rejected"]
    assert len(crashed) == 1 and "training failed: RuntimeError: failpoint" in crashed[0]["reason"]
    assert grid.trainings == 2
    monkeypatch.delenv(faults.ENV)
    report, grid = run(fed)  # the same job again: only the crashed owner is asked to train
    assert grid.trainings == 1 and all(o["status"] == "valued" for o in report["owners"])


def test_client_retries_a_transient_error(tmp_path, fast_spec, small_market, monkeypatch):
    import client.owner

    monkeypatch.setattr(client.owner.time, "sleep", lambda _s: None)
    fed = _federation(tmp_path, fast_spec, small_market)
    monkeypatch.setenv(faults.ENV, "client_training=oserror@1")
    report, _ = run(fed)
    attempts = sorted(o["metrics"]["attempts"] for o in report["owners"])
    assert all(o["status"] == "valued" for o in report["owners"]) and attempts == [1.0, 1.0, 2.0]


def _scenario(tmp_path, fed, name):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"job": json.loads(fed.job.to_json()), "node_configs": fed.node_configs,
                                "result": str(tmp_path / f"{name}-result.json")}))
    return path


def _run_process(scenario, failpoints=""):
    env = {**os.environ, faults.ENV: failpoints}
    done = subprocess.run([sys.executable, "-m", "tests.local_federation", str(scenario)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    result = scenario.with_name(scenario.stem + "-result.json")
    return done.returncode, (json.loads(result.read_text()) if result.exists() else None), done


def _comparable(report):
    """A report without what legitimately differs between two runs: its signature and wall times."""
    report = json.loads(json.dumps(report))
    report.pop("signature", None)
    for owner in report["owners"]:
        owner["metrics"].pop("train_seconds", None)
    return report


@pytest.mark.parametrize("failpoint", ["after_submission_recorded=exit@2", "after_game_stored=exit@1"])
def test_coordinator_killed_and_restarted_gives_the_same_report_without_retraining(
        tmp_path, fast_spec, small_market, failpoint):
    utilities = ("preference", "preference-logsigmoid")
    reference = _federation(tmp_path / "ref", fast_spec, small_market, utilities=utilities)
    _, grid = run(reference)  # uninterrupted, in this process: the same code as the scenario script
    assert grid.trainings == 3

    fed = _federation(tmp_path / "crash", fast_spec, small_market, utilities=utilities)
    (tmp_path / "crash").mkdir(exist_ok=True)
    scenario = _scenario(tmp_path / "crash", fed, "crash")
    code, result, done = _run_process(scenario, failpoint)
    assert code == faults.FAILPOINT_EXIT and result is None, done.stderr[-2000:]
    assert not (Path(fed.job.out_dir) / "report.json").exists()
    with Ledger(Path(fed.job.out_dir) / LEDGER_FILE) as ledger:
        held = len(ledger.stored_adapters(fed.job.run_id))
    code, result, done = _run_process(scenario)
    assert code == 0, done.stderr[-2000:]
    assert result["trainings"] == 3 - held  # owners whose adapters were stored did not train again
    events = [json.loads(line) for line in (Path(fed.job.out_dir) / "progress.jsonl").read_text().splitlines()]
    if failpoint.startswith("after_game_stored"):
        assert held == 3 and any("values read from the ledger" in e["message"] for e in events)
    expected = json.loads((Path(reference.job.out_dir) / "report.json").read_text())
    resumed = json.loads((Path(fed.job.out_dir) / "report.json").read_text())
    assert _comparable(resumed) == _comparable(expected) | {"run_id": resumed["run_id"]}


def test_a_wrong_storage_key_stops_the_run_and_loses_nothing(tmp_path, fast_spec, small_market):
    from common.trust.sealing import generate_storage_key

    fed = _federation(tmp_path, fast_spec, small_market)
    run(fed)
    report_before = (Path(fed.job.out_dir) / "report.json").read_bytes()
    import dataclasses

    wrong = dataclasses.replace(fed.job, storage_key=str(generate_storage_key(tmp_path / "other.key")))
    report, grid = run(type(fed)(wrong, fed.node_configs))
    out = Path(fed.job.out_dir)
    assert report is None and grid.trainings == 0
    assert "wrong storage key" in json.loads((out / ERROR_FILE).read_text())["error"]
    assert (out / "report.json").read_bytes() == report_before
    with Ledger(out / LEDGER_FILE) as ledger:
        assert sorted(ledger.stored_adapters(fed.job.run_id)) == sorted(OWNERS)
        # issue 12 #5: the failed re-run keeps the published report and its done status, failure beside it
        published = ledger.run(fed.job.run_id)
        assert published["status"] == "done" and published["report"] == json.loads(report_before)
        assert "wrong storage key" in published["failure"]
    assert sorted(_decrypted(fed, "clean")) == sorted(_decrypted(fed, "flipped"))  # the right key still opens them


def test_rerunning_a_command_resumes_and_a_different_job_is_refused_only_while_unfinished(tmp_path, fast_spec):
    import dataclasses

    from common.config.job import JOB_FILE, OwnerEntry, ValuationJob
    from common.embedded.default_job import resume_or_start
    from common.errors import ConfigError

    job = ValuationJob("first", (OwnerEntry("a", "a.jsonl"),), "eval.jsonl", str(tmp_path), fast_spec)
    assert resume_or_start(job) == (job, False)
    job.save(tmp_path / JOB_FILE)
    again = dataclasses.replace(job, run_id="second")
    assert resume_or_start(again) == (job, True)  # same work: the earlier run id comes back
    other = dataclasses.replace(again, budget=7.0)
    with pytest.raises(ConfigError, match="unfinished run first"):
        resume_or_start(other)
    (tmp_path / "report.json").write_text(json.dumps({"run_id": "first"}))
    assert resume_or_start(other) == (other, False)  # the earlier run finished: a new run may start


# --------------------------------------------------------------------------- an authenticated ledger (issue 12 #1)


def _sql(fed, statement: str, *params) -> None:
    import sqlite3

    with sqlite3.connect(Path(fed.job.out_dir) / LEDGER_FILE) as db:
        db.execute(statement, params)


@pytest.mark.parametrize("tamper", ["result", "utility", "adapter_row", "report"])
def test_altered_ledger_rows_are_refused_never_used_or_resigned(tamper, tmp_path, fast_spec, small_market):
    """Editing a finished game's values (clean 0.45 → 0.9) and re-running signed the forgery; so did a
    changed utility with the game deleted; deleting an adapter row silently retrained that owner."""
    fed = _federation(tmp_path, fast_spec, small_market)
    first, _ = run(fed)
    report_before = (Path(fed.job.out_dir) / "report.json").read_bytes()
    if tamper == "result":
        _sql(fed, "UPDATE results SET value = replace(value, '\"value\": ', '\"value\": 0.9') ")
    elif tamper == "utility":
        _sql(fed, "UPDATE utilities SET value = value + 0.25 WHERE mask = 1")
        _sql(fed, "DELETE FROM results")
    elif tamper == "adapter_row":
        _sql(fed, "DELETE FROM adapters WHERE owner = 'clean'")
    else:
        _sql(fed, "UPDATE runs SET report = replace(report, '\"clean-small\"', '\"outsider\"')")
    report, grid = run(fed)
    error = json.loads((Path(fed.job.out_dir) / ERROR_FILE).read_text())["error"]
    assert report is None and grid.trainings == 0, "nothing is recomputed or retrained from an altered ledger"
    assert "wrong storage key, or the ledger was altered" in error or "missing from the ledger" in error, error
    assert len(error.splitlines()) == 1
    assert (Path(fed.job.out_dir) / "report.json").read_bytes() == report_before, "nothing re-signed"


def test_decrypted_adapters_are_written_only_on_request(tmp_path, fast_spec, small_market):
    """Issue 12 #11: decrypted adapters sat in plaintext under OUT/adapters/ after every run."""
    import stat

    plain = _federation(tmp_path / "plain", fast_spec, small_market)
    run(plain)
    assert not (Path(plain.job.out_dir) / "adapters").exists()
    exported = _federation(tmp_path / "exported", fast_spec, small_market, export_adapters=True)
    run(exported)
    folder = Path(exported.job.out_dir) / "adapters"
    assert sorted(p.name for p in folder.iterdir()) == sorted(OWNERS)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_simulation_with_fewer_supernodes_than_owners_fails_at_once_with_the_setting_to_change(
        tmp_path, fast_spec, small_market):
    """A local connection sized for fewer SuperNodes than the roster: one clear error once the
    node set has settled (seconds), not after the owners' timeout; nothing is trained."""
    import time

    from common.config.job import OwnerEntry, ValuationJob
    from server.federation.collect import SIMULATION_SETTLE_S

    owners, eval_path = small_market
    job = ValuationJob(run_id="short", owners=tuple(OwnerEntry(n, str(owners[n])) for n in OWNERS[:2]),
                       eval_path=str(eval_path), out_dir=str(tmp_path / "out"), spec=fast_spec)
    assert job.simulated
    started = time.monotonic()
    report, grid = run(Federation(job, simulated_nodes(job)[:1]))
    seconds = time.monotonic() - started
    assert report is None and grid.trainings == 0
    error = json.loads((tmp_path / "out" / ERROR_FILE).read_text())["error"]
    assert error.startswith("the simulation has 1 SuperNode(s) for 2 owners") and "num-supernodes = 2" in error
    assert SIMULATION_SETTLE_S <= seconds < SIMULATION_SETTLE_S + 30 < job.owner_timeout_s, seconds
