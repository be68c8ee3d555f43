"""Running one job (server/federation/run.py) with a fake collector instead of Flower.

``run_job(job, collect)`` hands the owners still missing to ``collect(admission, wanted, progress)``;
here that function admits random adapters of the right shapes straight into the ledger (or fails
the way a network or a bug would), so resume, error recording and the ledger's account of a run
are tested in seconds, without training or Flower.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.config.job import OwnerEntry, ValuationJob
from common.errors import FairPoolError
from common.storage.locks import exclusive_lock
from common.storage.progress import PROGRESS_FILE, read_all
from common.trust.digest import tensors_sha256
from common.trust.sealing import generate_storage_key
from server.federation.ledger import Ledger
from server.federation.run import ERROR_FILE, LEDGER_FILE, LEDGER_LOCK, run_job
from server.valuation.pipeline import Submission

OWNERS = ("ann", "bob", "cyd")  # not "a": PEFT warns on adapter names inside "lora_"


pytestmark = pytest.mark.usefixtures("no_failpoints")


@pytest.fixture(scope="module")
def expected_shapes(fast_spec):
    from common.model.base import load_spec_model
    from common.model.lora import expected_adapter_shapes

    return expected_adapter_shapes(fast_spec, load_spec_model(fast_spec)[0])


@pytest.fixture(scope="module")
def adapters(expected_shapes):
    """Random adapters of the spec's shapes, one per owner (seeded: every run sees the same tensors)."""
    out = {}
    for i, name in enumerate(OWNERS):
        rng = np.random.default_rng(100 + i)
        out[name] = {k: (0.05 * rng.standard_normal(shape)).astype(np.float32) for k, shape in expected_shapes.items()}
    return out


@pytest.fixture(scope="module")
def eval_path(default_market, tmp_path_factory):
    """8 held-out pairs of the embedded market: enough for distinct coalition values, fast to score."""
    from common.data import load_preferences, save_preferences_jsonl

    examples, _ = load_preferences(default_market.eval_path)
    path = tmp_path_factory.mktemp("eval") / "eval.jsonl"
    save_preferences_jsonl(examples[:8], path)
    return path


def _job(tmp_path, fast_spec, eval_path, out="out", **kw) -> ValuationJob:
    storage = tmp_path / "storage.key"
    if not storage.exists():
        generate_storage_key(storage)
    return ValuationJob(run_id="run-1", owners=tuple(OwnerEntry(n) for n in OWNERS), eval_path=str(eval_path),
                        out_dir=str(tmp_path / out), spec=fast_spec, storage_key=str(storage), **kw)


class Collector:
    """A stand-in for collect_adapters: admits ``adapters`` of the owners it is asked for."""

    def __init__(self, adapters, *, only=None, then=None, reasons=None):
        self.adapters, self.only, self.then, self.reasons = adapters, only, then, reasons or {}
        self.calls: list[list[str]] = []

    def __call__(self, admission, wanted, progress):
        self.calls.append(list(wanted))
        for name in wanted:
            if self.only is not None and name not in self.only:
                continue
            reason = admission.admit(Submission(name, tensors=self.adapters[name], num_examples=10 + len(name)), None)
            assert reason is None, reason
            progress("train", f"{name}: adapter accepted")
        if self.then is not None:
            raise self.then
        return {n: r for n, r in self.reasons.items() if n in wanted}


def _error(job) -> dict:
    return json.loads((Path(job.out_dir) / ERROR_FILE).read_text())


def _exact_shapley(game) -> dict[str, float]:
    """Shapley values from the report's coalition table, averaging marginals over all orders."""
    table = {frozenset(c["members"]): c["value"] for c in game["coalitions"]}
    players = sorted(game["values"])
    totals = dict.fromkeys(players, 0.0)
    orders = list(itertools.permutations(players))
    for order in orders:
        for k, name in enumerate(order):
            totals[name] += table[frozenset(order[: k + 1])] - table[frozenset(order[:k])]
    return {n: t / len(orders) for n, t in totals.items()}


def _values(report) -> list[dict]:
    return [{n: v["value"] for n, v in g["values"].items()} for g in report["games"]]


@pytest.fixture(scope="module")
def reference(fast_spec, eval_path, adapters, tmp_path_factory):
    """An uninterrupted run: what a resumed run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    job = _job(tmp, fast_spec, eval_path)
    collect = Collector(adapters)
    report = run_job(job, collect)
    return job, report, collect


def test_a_run_collects_once_values_and_records_everything(reference, adapters):
    job, report, collect = reference
    out = Path(job.out_dir)
    assert collect.calls == [list(OWNERS)], "every owner is asked once, in the job's order"
    assert report is not None and json.loads((out / "report.json").read_text()) == report
    assert not (out / ERROR_FILE).exists()
    assert [(o["name"], o["status"], o["reason"]) for o in report["owners"]] == [(n, "valued", None) for n in OWNERS]
    assert {o["name"]: o["adapter_sha256"] for o in report["owners"]} == {n: tensors_sha256(adapters[n]) for n in OWNERS}
    (game,) = report["games"]
    assert game["estimator"] == "exact" and len(game["coalitions"]) == 8 and game["empty"] == 0.5
    exact = _exact_shapley(game)
    for name, value in game["values"].items():
        assert value["value"] == pytest.approx(exact[name], abs=1e-12)
    assert sum(v["value"] for v in game["values"].values()) == pytest.approx(game["grand"] - game["empty"])
    with Ledger(out / LEDGER_FILE) as ledger:
        run = ledger.run(job.run_id)
        assert run["status"] == "done" and run["report"] == report and run["failure"] is None
        assert ValuationJob.from_json(ledger.run_job(job.run_id)) == job
        assert [(s["owner"], s["status"]) for s in ledger.submissions(job.run_id)] == [(n, "accepted") for n in OWNERS]
        assert sorted(ledger.stored_adapters(job.run_id)) == list(OWNERS)
        assert [(o["name"], o["status"]) for o in ledger.owners(job.run_id)] == [(n, "valued") for n in OWNERS]
        events = [e for _, e in ledger.events(job.run_id)]
    assert events[0]["stage"] == "start" and events[-1]["stage"] == "done"
    assert events == list(read_all(out / PROGRESS_FILE)), "the ledger keeps every progress event"


def test_a_failed_collection_is_recorded_and_the_rerun_asks_only_the_missing_owners(
        tmp_path, fast_spec, eval_path, adapters, reference):
    job = _job(tmp_path, fast_spec, eval_path)
    out = Path(job.out_dir)
    first = Collector(adapters, only={"ann"}, then=FairPoolError("the network went down"))
    assert run_job(job, first) is None
    assert _error(job) == {"error": "the network went down", "traceback": None}
    assert not (out / "report.json").exists(), "never a partial report"
    with Ledger(out / LEDGER_FILE) as ledger:
        assert ledger.run(job.run_id)["status"] == "failed"
        assert ledger.run(job.run_id)["failure"] == "the network went down"
        assert sorted(ledger.stored_adapters(job.run_id)) == ["ann"], "what arrived before the failure is kept"

    second = Collector(adapters)
    report = run_job(job, second)
    assert second.calls == [["bob", "cyd"]], "a stored adapter is not asked for again"
    assert report is not None and not (out / ERROR_FILE).exists(), "a later success clears error.json"
    assert _values(report) == _values(reference[1]), "the resumed run values like an uninterrupted one"
    assert report["payout"] == reference[1]["payout"]
    messages = [e["message"] for e in read_all(out / PROGRESS_FILE)]
    assert any("(resumed)" in m for m in messages)
    assert any(m.startswith("1 accepted adapter(s) already in the ledger: ann will not retrain") for m in messages)
    with Ledger(out / LEDGER_FILE) as ledger:
        assert ledger.run(job.run_id)["status"] == "done" and ledger.run(job.run_id)["failure"] is None


def test_a_finished_run_is_replayed_from_the_ledger(tmp_path, fast_spec, eval_path, adapters):
    job = _job(tmp_path, fast_spec, eval_path)
    first = run_job(job, Collector(adapters))
    with Ledger(Path(job.out_dir) / LEDGER_FILE) as ledger:
        utilities = ledger._db.execute("SELECT COUNT(*) FROM utilities").fetchone()[0]
    again = Collector(adapters)
    replay = run_job(job, again)
    assert again.calls == [], "every adapter is stored: nobody is asked"
    assert _values(replay) == _values(first) and replay["owners"] == first["owners"]
    assert any(e["message"] == "preference: values read from the ledger" for e in read_all(Path(job.out_dir) / PROGRESS_FILE))
    with Ledger(Path(job.out_dir) / LEDGER_FILE) as ledger:
        assert ledger._db.execute("SELECT COUNT(*) FROM utilities").fetchone()[0] == utilities == 8


def test_an_unexpected_exception_is_an_internal_error_with_its_trace(tmp_path, fast_spec, eval_path, adapters):
    job = _job(tmp_path, fast_spec, eval_path)
    assert run_job(job, Collector(adapters, then=RuntimeError("boom"))) is None
    error = _error(job)
    assert error["error"] == "internal error: RuntimeError: boom"
    assert error["traceback"].rstrip().endswith("RuntimeError: boom") and "__call__" in error["traceback"]
    with Ledger(Path(job.out_dir) / LEDGER_FILE) as ledger:
        assert ledger.run(job.run_id)["status"] == "failed"
        assert ledger.run(job.run_id)["failure"] == "internal error: RuntimeError: boom"
    events = list(read_all(Path(job.out_dir) / PROGRESS_FILE))
    assert events[-1] == {**events[-1], "stage": "error", "message": "internal error: RuntimeError: boom"}


def test_too_few_owners_ends_with_the_reasons_in_the_ledger(tmp_path, fast_spec, eval_path, adapters):
    job = _job(tmp_path, fast_spec, eval_path, min_owners=2)
    collect = Collector(adapters, only={"ann"}, reasons={"bob": "no reply within 5s"})
    assert run_job(job, collect) is None
    assert _error(job)["error"] == ("only 1 owner(s) accepted, fewer than the required 2: "
                                    "bob: no reply within 5s; cyd: no adapter accepted")
    with Ledger(Path(job.out_dir) / LEDGER_FILE) as ledger:
        assert ledger.owners(job.run_id) == [
            {"name": "ann", "public_key": "", "status": "accepted", "reason": None},
            {"name": "bob", "public_key": "", "status": "rejected", "reason": "no reply within 5s"},
            {"name": "cyd", "public_key": "", "status": "rejected", "reason": "no adapter accepted"}]
        assert sorted(ledger.stored_adapters(job.run_id)) == ["ann"]


def test_the_same_run_id_with_other_settings_is_refused(tmp_path, fast_spec, eval_path, adapters):
    job = _job(tmp_path, fast_spec, eval_path)
    first = run_job(job, Collector(adapters, only={"ann"}, then=FairPoolError("stopped")))
    assert first is None
    changed = dataclasses.replace(job, budget=7.0)
    collect = Collector(adapters)
    assert run_job(changed, collect) is None and collect.calls == []
    assert _error(job)["error"] == (f"run run-1 in {job.out_dir} was started with different settings; "
                                    "use another output directory")
    with Ledger(Path(job.out_dir) / LEDGER_FILE) as ledger:
        assert ValuationJob.from_json(ledger.run_job("run-1")) == job, "the earlier job is kept as it was"
        assert sorted(ledger.stored_adapters("run-1")) == ["ann"]
    # where the keys are kept is not part of the work: a moved storage key still resumes and opens what is stored
    moved = dataclasses.replace(job, storage_key=str(shutil.copy(job.storage_key, tmp_path / "moved.key")))
    collect = Collector(adapters)
    assert run_job(moved, collect) is not None and collect.calls == [["bob", "cyd"]]


def test_a_busy_ledger_is_left_alone(tmp_path, fast_spec, eval_path, adapters):
    job = _job(tmp_path, fast_spec, eval_path)
    out = Path(job.out_dir)
    collect = Collector(adapters)
    with exclusive_lock(out / LEDGER_LOCK, "held by this test"):
        assert run_job(job, collect) is None
    assert collect.calls == [] and not (out / LEDGER_FILE).exists(), "nothing recorded in a busy ledger"
    assert _error(job)["error"] == (f"the ledger in {out} is in use by another FairPool run (pid {os.getpid()}); "
                                    "wait for it to end, or choose another `out_dir`")


def test_an_unreadable_storage_key_stops_the_run_before_the_ledger(tmp_path, fast_spec, eval_path, adapters):
    job = dataclasses.replace(_job(tmp_path, fast_spec, eval_path), storage_key=str(tmp_path / "absent.key"))
    collect = Collector(adapters)
    assert run_job(job, collect) is None and collect.calls == []
    assert _error(job)["error"].startswith(f"cannot read storage key {tmp_path / 'absent.key'}")
    assert not (Path(job.out_dir) / LEDGER_FILE).exists()


# --------------------------------------------------------------------------- instant resume (issue 14 #4)

def test_held_owners_are_those_whose_adapters_the_ledger_holds(tmp_path, fast_spec, eval_path, adapters):
    from server.federation.run import held_owners

    job = _job(tmp_path, fast_spec, eval_path)
    assert held_owners(job) == set(), "no ledger yet"
    assert run_job(job, Collector(adapters, only={"ann", "cyd"}, then=FairPoolError("down"))) is None
    assert held_owners(job) == {"ann", "cyd"}
    assert held_owners(dataclasses.replace(job, run_id="run-2")) == set(), "another run holds nothing"


def test_a_run_whose_owners_all_trained_is_valued_here_without_asking_anyone(
        tmp_path, fast_spec, eval_path, adapters, reference):
    """Crashed after the last adapter was stored (before any game): the re-run values from the
    ledger in this process; nobody is asked, and the values are the uninterrupted run's."""
    from server.federation.run import run_held

    job = _job(tmp_path, fast_spec, eval_path)
    assert run_job(job, Collector(adapters, then=FairPoolError("crash after the last adapter"))) is None
    seen: list[dict] = []
    report = run_held(job, seen.append)
    assert _values(report) == _values(reference[1]) and report["payout"] == reference[1]["payout"]
    resume = next(e for e in seen if e["stage"] == "resume")
    assert resume["held"] == resume["total"] == len(OWNERS)
    assert not any(e["stage"] == "train" for e in seen), "nobody trains"
    assert seen == list(read_all(Path(job.out_dir) / PROGRESS_FILE)), "the caller sees every event of the file"


def test_a_finished_run_is_replayed_without_loading_a_model_or_redrawing(
        tmp_path, fast_spec, eval_path, adapters, monkeypatch):
    from server.federation import run as run_module

    job = _job(tmp_path, fast_spec, eval_path)
    first = run_job(job, Collector(adapters))
    out = Path(job.out_dir)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".json", ".md", ".html", ".png")}

    def no_work(*_a, **_k):
        raise AssertionError("a finished run must not be valued again")

    monkeypatch.setattr(run_module, "run_job", no_work)
    monkeypatch.setattr(run_module, "write_report", no_work)
    report = run_module.run_held(job)
    assert report == first
    assert {n: (out / n).read_bytes() for n in before} == before
    (out / "report.html").unlink()  # a file of the report is missing: it is written again
    monkeypatch.undo()
    assert run_module.run_held(job) == first and (out / "report.html").exists()
    events = list(read_all(out / PROGRESS_FILE))
    assert [e["stage"] for e in events] == ["start", "resume", "done"]
    with Ledger(out / LEDGER_FILE) as ledger:
        assert ledger.events(job.run_id)[-1][1]["stage"] == "done", "the replay's events reach the ledger"


def test_run_held_refuses_a_job_whose_owners_must_still_train(tmp_path, fast_spec, eval_path, adapters):
    from server.federation.run import run_held

    job = _job(tmp_path, fast_spec, eval_path)
    assert run_job(job, Collector(adapters, only={"ann"}, then=FairPoolError("down"))) is None
    with pytest.raises(FairPoolError, match="the ledger holds no adapter of bob, cyd: they must train"):
        run_held(job)


def test_the_progress_bar_counts_held_owners_as_done():
    from server.cli.progress_view import ProgressView

    with ProgressView(3) as view:
        view.show({"stage": "resume", "message": "2 held", "held": 2, "total": 3})
        assert view.owners_done == 2
        view.show({"stage": "train", "message": "x: adapter accepted", "done": 1, "total": 1})
        assert view.owners_done == 3
