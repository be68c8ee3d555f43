"""The coordinator's valuation and report, from submissions (no Flower), on real adapters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.config.job import OwnerEntry, ValuationJob
from common.errors import FairPoolError
from server.report.schema import REPORT_MD, VALUES_PNG
from server.report.write import write_report
from server.valuation.pipeline import Submission, check_efficiency, value_submissions


def _job(fast_spec, default_market, tmp_path, names, **kw):
    return ValuationJob(run_id="t", owners=tuple(OwnerEntry(n) for n in names), eval_path=str(default_market.eval_path),
                        out_dir=str(tmp_path), spec=fast_spec, **kw)


def _subs(quick_adapters, names):
    return [Submission(n, tensors=quick_adapters[n].tensors, num_examples=quick_adapters[n].num_examples,
                       claimed_sha256=quick_adapters[n].sha256) for n in names]


@pytest.fixture(scope="module")
def report(fast_spec, default_market, quick_adapters, tmp_path_factory):
    names = ["clean", "clean-small", "flipped"]
    subs = _subs(quick_adapters, names) + [Submission("ghost", error="no reply within 5s")]
    job = _job(fast_spec, default_market, tmp_path_factory.mktemp("r"), names + ["ghost"])
    return value_submissions(job, subs)


def test_report_schema_and_game_properties(report):
    assert report["run_id"] == "t"
    owners = {o["name"]: o for o in report["owners"]}
    assert owners["ghost"]["status"] == "rejected" and "no reply" in owners["ghost"]["reason"]
    assert all(owners[n]["status"] == "valued" and len(owners[n]["adapter_sha256"]) == 64
               for n in ("clean", "clean-small", "flipped"))
    (game,) = report["games"]
    assert set(game["values"]) == {"clean", "clean-small", "flipped"}, "a rejected owner is not a player"
    assert game["empty"] == 0.5 and game["estimator"] == "exact"
    assert len(game["coalitions"]) == 8
    assert check_efficiency(game)
    values = {n: v["value"] for n, v in game["values"].items()}
    assert values["flipped"] < 0 < values["clean"]
    assert set(report["payout"]["shares"]) == set(values)
    assert report["payout"]["shares"]["flipped"] == 0.0 and report["payout"]["flagged"] == ["flipped"]
    assert sum(report["payout"]["shares"].values()) == pytest.approx(1.0)


def test_coalition_values_come_from_the_margin_arithmetic(report):
    """Singletons' accuracy equals the share of held-out pairs the adapter alone ranks right."""
    game = report["games"][0]
    by_members = {tuple(c["members"]): c["value"] for c in game["coalitions"]}
    assert by_members[()] == 0.5
    grand = by_members[("clean", "clean-small", "flipped")]
    assert grand == game["grand"]
    assert by_members[("clean",)] > 0.5 > by_members[("flipped",)]


def test_report_files_are_written(report, tmp_path):
    path = write_report(report, tmp_path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    md = (tmp_path / REPORT_MD).read_text()
    assert "| clean |" in md and "ghost" in md and "Rejected owners" in md
    png = (tmp_path / VALUES_PNG).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary files left"
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {"0o600"}, "private by default"
    write_report(report, tmp_path / "public", public=True)  # --public-report
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "public").iterdir()} == {"0o644"}


def _singletons(game):
    return {c["members"][0]: c["value"] for c in game["coalitions"] if len(c["members"]) == 1}


def _valuation(**kw):
    from common.config.games import ValuationSettings

    return ValuationSettings(**kw)


def test_composition_rules_change_the_game(fast_spec, default_market, quick_adapters, tmp_path):
    names = ["clean", "clean-small", "flipped"]
    settings = _valuation(utilities=("preference", "preference-logsigmoid"))
    games = {rule: value_submissions(_job(fast_spec, default_market, tmp_path, names, composition=rule,
                                          valuation=settings), _subs(quick_adapters, names))["games"]
             for rule in ("sum", "mean", "size")}
    for rule, (accuracy, logsig) in games.items():
        assert accuracy["composition"] == rule and check_efficiency(accuracy) and check_efficiency(logsig)
        assert _singletons(accuracy) == _singletons(games["sum"][0]), "one owner alone is that owner's model"
    # mean = sum / |S| scales every margin by a positive number: accuracy (a sign) cannot tell
    # the two rules apart, but the log-sigmoid utility of multi-owner coalitions can.
    assert games["sum"][0]["coalitions"] == games["mean"][0]["coalitions"]
    assert not np.isclose(games["sum"][1]["grand"], games["mean"][1]["grand"])


def test_sampling_estimator_and_payout_game(fast_spec, default_market, quick_adapters, tmp_path):
    names = ["clean", "clean-small", "flipped"]
    settings = _valuation(utilities=("preference", "preference-logsigmoid"), estimator="permutation",
                          max_evaluations=400, payout_game="preference-logsigmoid")
    report = value_submissions(_job(fast_spec, default_market, tmp_path, names, valuation=settings),
                               _subs(quick_adapters, names))
    accuracy, logsig = report["games"]
    # The rule is MaxEvaluations(400) | StderrBelow(1e-3, min_samples=30). An antithetic sample of 3
    # players costs 2·4 prefixes, so the budget holds exactly 50 samples. The accuracy game is far
    # from additive: its 3 antithetic pair averages differ by more than 0.01 for every owner
    # (computed below from the coalition table), so 50 samples leave a stderr near 0.01, far above
    # 1e-3: only the budget can stop it. The log-sigmoid game of these small margins is nearly
    # additive (pair averages agree to < 1e-6), so it converges as soon as 30 samples are in.
    spread = {g["utility"]: _pair_average_spread(g) for g in (accuracy, logsig)}
    assert min(spread["preference"].values()) > 0.01 and max(spread["preference-logsigmoid"].values()) < 1e-6
    assert accuracy["estimator"] == "permutation" and accuracy["status"] == "budget_exhausted"
    assert "MaxEvaluations(400)" in str(accuracy["params"]["stopped_by"])
    assert "StderrBelow" not in str(accuracy["params"]["stopped_by"])
    assert accuracy["params"]["evaluations"] == 400 and accuracy["params"]["samples"] == 50
    assert accuracy["evaluations"] == 8, "all 2³ coalitions are computed once (memo hits are not)"
    assert all(1e-3 < v["stderr"] < 0.05 and v["count"] == 200 for v in accuracy["values"].values())
    assert logsig["status"] == "converged" and "StderrBelow" in str(logsig["params"]["stopped_by"])
    assert 30 <= logsig["params"]["samples"] < 50 and all(v["stderr"] < 1e-3 for v in logsig["values"].values())
    for game, tolerance in ((accuracy, None), (logsig, 1e-6)):  # the estimates cover the exact values
        exact = _exact_shapley_from_table(game)
        for name, v in game["values"].items():
            assert abs(v["value"] - exact[name]) <= (tolerance or 4 * v["stderr"]), (game["utility"], name)
    assert report["payout"]["game"] == "preference-logsigmoid"
    positive = {n for n, v in logsig["values"].items() if v["value"] > 0}
    assert {n for n, s in report["payout"]["shares"].items() if s > 0} == positive


def _coalition_table(game):
    return {frozenset(c["members"]): c["value"] for c in game["coalitions"]}


def _exact_shapley_from_table(game):
    """Shapley values by averaging marginal contributions over all n! orders (n = 3 here)."""
    import itertools

    table, players = _coalition_table(game), sorted(game["values"])
    totals = dict.fromkeys(players, 0.0)
    orders = list(itertools.permutations(players))
    for order in orders:
        for k, name in enumerate(order):
            totals[name] += table[frozenset(order[: k + 1])] - table[frozenset(order[:k])]
    return {name: total / len(orders) for name, total in totals.items()}


def _pair_average_spread(game):
    """Per owner, max − min over antithetic pairs (π, reversed π) of the pair's mean marginal."""
    import itertools

    table, players = _coalition_table(game), sorted(game["values"])

    def marginal(order, name):
        k = order.index(name)
        return table[frozenset(order[: k + 1])] - table[frozenset(order[:k])]

    spread = {}
    for name in players:
        averages = [(marginal(o, name) + marginal(o[::-1], name)) / 2 for o in itertools.permutations(players)]
        spread[name] = max(averages) - min(averages)
    return spread


def test_too_few_accepted_owners_is_an_error(fast_spec, default_market, quick_adapters, tmp_path):
    job = _job(fast_spec, default_market, tmp_path, ["clean", "ghost"], min_owners=2)
    with pytest.raises(FairPoolError, match="only 1 owner"):
        value_submissions(job, _subs(quick_adapters, ["clean"]))
