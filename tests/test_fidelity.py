"""The fidelity command end to end on a 3-owner micro market (tiny model, seconds per training)."""

from __future__ import annotations

import json

import pytest

from common.market import default_profiles, make_market
from server.cli import main
from server.fidelity import orders_of, studied_coalitions


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
    assert cost["arithmetic"]["fine_tunings"] == 3 and cost["union"]["fine_tunings"] == 7
    assert cost["sequential"]["fine_tunings"] == 3 * 1 + 3 * 2 * 2 + 1 * 2 * 3
    assert set(report["agreement"]) == {"sum_vs_sequential", "sum_vs_union", "mean_vs_sequential", "mean_vs_union"}
    assert set(report["shapley"]["kendall_tau"]) == {"arithmetic_sum_vs_sequential", "arithmetic_sum_vs_union",
                                                     "arithmetic_mean_vs_sequential", "arithmetic_mean_vs_union"}
    for name in ("fidelity.md", "fidelity.png"):
        assert (tmp_path / "out" / name).exists()
    assert "Fidelity of arithmetic coalitions" in capsys.readouterr().out
