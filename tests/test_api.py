"""The public Python API (issue 14 #1): ``import fairpool``, typed, the same pipeline as the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fairpool
from server.report.model import Report

ROOT = Path(__file__).resolve().parents[1]


def test_the_facade_exports_exactly_its_public_names_and_ships_py_typed():
    assert sorted(fairpool.__all__) == sorted(set(fairpool.__all__))
    for name in fairpool.__all__:
        assert getattr(fairpool, name) is not None, name
    assert (ROOT / "fairpool" / "py.typed").exists()
    assert {"value", "Report", "Game", "estimate", "read_report", "verify_report", "to_dataframe",
            "MaxEvaluations", "StderrBelow", "ValuationSettings", "TrainingSpec"} <= set(fairpool.__all__)


def test_a_game_from_a_function_and_from_stored_utilities_value_alike():
    weights = {"a": 1.0, "b": 2.0, "c": 4.0}
    def additive(coalition: frozenset[str]) -> float:
        return sum(weights[p] for p in coalition)

    game = fairpool.Game.from_function(list(weights), additive)
    exact = fairpool.estimate(game, "exact")
    np.testing.assert_allclose(exact.values, [1.0, 2.0, 4.0])
    stored = {frozenset(s): additive(frozenset(s)) for s in
              ([], ["a"], ["b"], ["c"], ["a", "b"], ["a", "c"], ["b", "c"], ["a", "b", "c"])}
    again = fairpool.estimate(fairpool.Game.from_utilities(list(weights), stored), "permutation",
                              stop=fairpool.MaxEvaluations(64), seed=1)
    np.testing.assert_allclose(again.values, [1.0, 2.0, 4.0], atol=1e-9)
    frame = fairpool.to_dataframe(again)
    assert list(frame.index) == ["a", "b", "c"] and list(frame.columns) == ["value", "stderr", "count"]
    partial = fairpool.Game.from_utilities(["a", "b"], {frozenset(): 0.0, frozenset({"a"}): 1.0})
    with pytest.raises(KeyError, match=r"no stored utility for the coalition \['b'\]"):
        fairpool.estimate(partial, "exact")
    with pytest.raises(ValueError, match="outside the game"):
        fairpool.Game.from_utilities(["a"], {frozenset({"z"}): 1.0})


def _demo_like_report() -> dict:
    return {"schema_version": 2, "run_id": "r1",
            "owners": [{"name": "x", "status": "valued", "source": "trained", "num_examples": 10, "reason": None,
                        "adapter_sha256": "00"},
                       {"name": "y", "status": "rejected", "source": "adapter", "num_examples": 0,
                        "reason": "nan weights", "adapter_sha256": None}],
            "games": [{"utility": "preference", "kind": "shapley", "estimator": "exact", "status": "converged",
                       "empty": 0.5, "grand": 0.9, "values": {"x": {"value": 0.4, "stderr": 0.0, "count": 2}},
                       "coalitions": [{"members": [], "value": 0.5}, {"members": ["x"], "value": 0.9}]}],
            "payout": {"game": "preference", "kind": "shapley", "policy": "positive", "policy_description": "d",
                       "budget": 10.0, "shares": {"x": 1.0, "y": 0.0}, "amounts": {"x": 10.0, "y": 0.0},
                       "flagged": []},
            "flags": [], "settings": {}}


def test_a_report_reads_as_typed_objects_a_frame_and_its_own_game(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_demo_like_report()))
    report = fairpool.read_report(path)
    assert [o.name for o in report.owners] == ["x", "y"] and report.owners[1].reason == "nan weights"
    assert report.payout.amounts == {"x": 10.0, "y": 0.0} and not report.signed
    frame = report.to_dataframe()
    assert frame.loc["x", "preference"] == 0.4 and np.isnan(frame.loc["y", "preference"])
    assert frame.loc["x", "amount"] == 10.0 and frame.loc["y", "status"] == "rejected"
    assert fairpool.estimate(report.game(), "exact").values.tolist() == [pytest.approx(0.4)]
    table = report.coalitions_dataframe()
    assert table["utility"].tolist() == [0.5, 0.9] and table["x"].tolist() == [False, True]
    with pytest.raises(KeyError, match="no game 'reward:x'"):
        report.game_result("reward:x")
    with pytest.raises(fairpool.SignatureError, match="not signed"):
        report.verify(_a_public_key(tmp_path))
    with pytest.raises(fairpool.FairPoolError, match="schema version 1"):
        Report({**report.raw, "schema_version": 1})


def _a_public_key(tmp_path: Path) -> Path:
    from common.trust.signing import generate_private_key, save_keypair

    save_keypair(generate_private_key(), tmp_path / "keys", "k")
    return tmp_path / "keys" / "k.pub"


def test_value_checks_its_inputs_before_writing_anything(tmp_path, base_model_dir):
    out = tmp_path / "out"
    with pytest.raises(fairpool.ConfigError, match="no such file or directory"):
        fairpool.value({"a": tmp_path / "missing.jsonl"}, eval=tmp_path / "missing.jsonl", out=out,
                       base_model=base_model_dir, progress=False)
    with pytest.raises(fairpool.ConfigError, match=r"`spec`: unknown setting 'epoch'"):
        fairpool.value({"a": tmp_path}, eval=tmp_path, out=out, spec={"epoch": 1}, progress=False)
    with pytest.raises(fairpool.ConfigError, match="needs at least one owner"):
        fairpool.value({}, eval=tmp_path, out=out, progress=False)
    assert not out.exists()


@pytest.mark.slow
def test_the_notebook_example_runs_end_to_end(tmp_path):
    """examples/notebook.py values three owners through fairpool.value (Flower's Simulation
    Engine), reads, verifies and re-values the report, then resumes instantly."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook.py"), str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m[0]: float(m[1]) for m in re.findall(r"^(clean|noisy|flipped)\s+valued\s+16\s+(-?[0-9.]+)", proc.stdout, re.M)}
    assert rows["clean"] > rows["noisy"] > 0 > rows["flipped"], proc.stdout
    gap = float(re.search(r"largest gap ([0-9.]+)", proc.stdout).group(1))
    assert gap < 0.1 and "resumed, same report: True" in proc.stdout
    report = fairpool.read_report(tmp_path / "w" / "run" / "report.json")
    report.verify(tmp_path / "w" / "run" / "keys" / "coordinator.pub")
    assert report.payout.budget == 1000
