"""The fidelity command end to end on a 3-owner micro market (tiny model, seconds per training)."""

from __future__ import annotations

import json

import pytest

from common.embedded.market import default_profiles, make_market
from server.cli.main import main
from server.studies.fidelity import orders_of, studied_coalitions


def test_coalition_and_order_choice():
    assert len(studied_coalitions(3, "all", 0)) == 7
    assert studied_coalitions(4, 5, 1) == studied_coalitions(4, 5, 1) and len(studied_coalitions(4, 5, 1)) == 5
    with pytest.raises(ValueError):
        studied_coalitions(3, 8, 0)
    assert orders_of((0, 1, 2), 2, 0)[0] == (0, 1, 2) and len(set(orders_of((0, 1, 2), 2, 0))) == 2
    assert orders_of((4,), 3, 0) == [(4,)]


def test_fidelity_command_on_a_micro_market(tmp_path, base_model_dir, capsys):
    market = make_market(tmp_path / "m", seed=2, profiles=default_profiles(16)[:4], eval_size=30)
    owners = [a for n in ("clean", "noisy", "flipped") for a in ("--owner", f"{n}={market.owners[n]}")]
    code = main(["fidelity", *owners, "--eval", str(market.eval_path), "--base-model", str(base_model_dir),
                 "--orders", "2", "--epochs", "1", "--out", str(tmp_path / "out")])
    assert code == 0
    report = json.loads((tmp_path / "out" / "fidelity.json").read_text())
    assert len(report["coalitions"]) == 7 and report["owners"] == ["clean", "noisy", "flipped"]
    singles = [r for r in report["coalitions"] if len(r["members"]) == 1]
    for row in singles:  # one owner: arithmetic, one-stage sequential and union are the same training
        assert row["arithmetic_sum"] == pytest.approx(row["sequential"], abs=0.05)
        assert row["sequential_order_spread"] == 0
    cost = report["cost"]
    # Retraining reuses what is the same model: a one-owner union and a chain's first stage are the
    # owner's own adapter, and orders that share a prefix share its stages (issue 17 #3).
    assert cost["arithmetic"]["fine_tunings"] == 3 and cost["union"]["fine_tunings"] == 3 + 1
    orders = [o for c in studied_coalitions(3, "all", 0) for o in orders_of(c, 2, 0)]
    assert cost["sequential"]["stages_in_chains"] == 3 * 1 + 3 * 2 * 2 + 1 * 2 * 3 == sum(map(len, orders))
    assert cost["sequential"]["fine_tunings"] == len({o[:k] for o in orders for k in range(2, len(o) + 1)}) == 8
    pairs = {f"{r}_vs_{v}" for r in ("sum", "mean", "size") for v in ("sequential", "union")}
    assert set(report["agreement"]) == pairs and set(report["agreement_logsigmoid"]) == pairs
    assert set(report["shapley"]["kendall_tau"]) == {f"arithmetic_{p}" for p in pairs}
    for row in report["coalitions"]:  # the continuous metric is a mean log-probability: negative, finite
        assert all(-50 < v < 0 for v in row["logsigmoid"].values())
    # the diagnostics say how far each owner's training got: flipped learned the reverse reward
    diag = report["diagnostics"]
    assert diag["clean"]["eval_reward_margin"] > 0 > diag["flipped"]["eval_reward_margin"]
    assert all(d["train_loss"] > 0 and d["steps"] >= 1 for d in diag.values())
    for name in ("fidelity.md", "fidelity.png"):
        assert (tmp_path / "out" / name).exists()
    assert "Fidelity of arithmetic coalitions" in capsys.readouterr().out


def test_fidelity_sweep_writes_one_study_per_setting_and_a_summary(tmp_path, base_model_dir, capsys):
    market = make_market(tmp_path / "m", seed=3, profiles=default_profiles(12)[:2], eval_size=20)
    owners = [a for n in ("clean", "clean-small") for a in ("--owner", f"{n}={market.owners[n]}")]
    code = main(["fidelity", *owners, "--eval", str(market.eval_path), "--base-model", str(base_model_dir),
                 "--orders", "1", "--setting", "epochs=1", "--setting", "epochs=1,learning-rate=1e-3",
                 "--out", str(tmp_path / "sweep")])
    assert code == 0
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    labels = [r["setting"] for r in summary["settings"]]
    assert labels == ["epochs-1_lr-0.005", "epochs-1_lr-0.001"]
    for label in labels:
        study = json.loads((tmp_path / "sweep" / label / "fidelity.json").read_text())
        row = next(r for r in summary["settings"] if r["setting"] == label)
        assert row["learning_rate"] == study["spec"]["learning_rate"]
        assert row["agreement"]["accuracy"]["sum_vs_union"]["spearman"] == \
            study["agreement"]["sum_vs_union"]["spearman"]
    slow, fast = summary["settings"]  # a smaller learning rate moves the adapters less
    assert fast["mean_abs_reward_margin"] < slow["mean_abs_reward_margin"]
    assert (tmp_path / "sweep" / "sweep.png").exists()
    assert "Fidelity across training settings" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["epochs", "speed=3", "epochs=-1", "epochs=x", ""])
def test_bad_sweep_settings_are_user_errors(text, tmp_path, capsys):
    code = main(["fidelity", "--market", "--setting", text, "--out", str(tmp_path / "o")])
    assert code == 2 and "--setting" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
