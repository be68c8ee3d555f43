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
    """The pipeline hands the estimator, its budget and the payout game through. 3 owners have
    2³ = 8 coalitions: a budget of 400 buys them all, so permutation enumerates (exact, stderr 0);
    a budget of 5 makes it sample, and the budget stops it."""
    names = ["clean", "clean-small", "flipped"]
    runs = {}
    for budget in (400, 5):
        settings = _valuation(utilities=("preference", "preference-logsigmoid"), estimator="permutation",
                              max_evaluations=budget, payout_game="preference-logsigmoid")
        runs[budget] = value_submissions(_job(fast_spec, default_market, tmp_path / str(budget), names,
                                              valuation=settings), _subs(quick_adapters, names))
    report = runs[400]
    accuracy, logsig = report["games"]
    for game in (accuracy, logsig):
        assert game["estimator"] == "permutation" and game["status"] == "converged"
        assert game["params"]["enumerated"] is True and game["params"]["evaluations"] == 8
        exact = _exact_shapley_from_table(game)
        for name, v in game["values"].items():
            assert v["stderr"] == 0 and v["value"] == pytest.approx(exact[name], abs=1e-12), (game["utility"], name)
    assert report["payout"]["game"] == "preference-logsigmoid"
    positive = {n for n, v in logsig["values"].items() if v["value"] > 0}
    assert {n for n, s in report["payout"]["shares"].items() if s > 0} == positive

    sampled = runs[5]["games"][0]
    assert sampled["estimator"] == "permutation" and "enumerated" not in sampled["params"]
    assert sampled["params"]["stop"] == "MaxEvaluations(5) | StderrBelow(0.001, min_samples=30)"
    assert 5 <= sampled["params"]["evaluations"] <= 8
    exact = _exact_shapley_from_table(runs[400]["games"][0])
    if sampled["params"].get("exhausted"):  # the last permutation happened to complete the table
        assert sampled["status"] == "converged"
    else:
        assert sampled["status"] == "budget_exhausted" and "MaxEvaluations(5)" in str(sampled["params"]["stopped_by"])
    for name, v in sampled["values"].items():
        assert abs(v["value"] - exact[name]) <= 4 * v["stderr"] + 1e-12, name


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


def test_too_few_accepted_owners_is_an_error(fast_spec, default_market, quick_adapters, tmp_path):
    job = _job(fast_spec, default_market, tmp_path, ["clean", "ghost"], min_owners=2)
    with pytest.raises(FairPoolError, match="only 1 owner"):
        value_submissions(job, _subs(quick_adapters, ["clean"]))
