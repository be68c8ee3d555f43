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


def test_asymmetric_values_under_a_precedence_through_the_pipeline(fast_spec, default_market, quick_adapters,
                                                                  tmp_path):
    """Issue 16 #3: `--estimator asymmetric --precedence clean<flipped` reaches the estimator; the
    report labels the values, they are efficient, and they are the mean over the allowed orders
    of the stored utilities (computed here by listing the 3 orders with clean before flipped)."""
    import itertools

    from server.report.markdown import render_markdown

    names = ["clean", "clean-small", "flipped"]
    settings = _valuation(estimator="asymmetric", precedence=("clean<flipped",))
    report = value_submissions(_job(fast_spec, default_market, tmp_path, names, valuation=settings),
                               _subs(quick_adapters, names))
    game = report["games"][0]
    assert game["kind"] == "asymmetric" and game["params"]["precedence"] == "clean<flipped"
    assert check_efficiency(game) and report["payout"]["kind"] == "asymmetric"
    table = {frozenset(r["members"]): r["value"] for r in game["coalitions"]}
    orders = [o for o in itertools.permutations(names) if o.index("clean") < o.index("flipped")]
    for name in names:
        mean = np.mean([table[frozenset(o[:o.index(name) + 1])] - table[frozenset(o[:o.index(name)])]
                        for o in orders])
        assert game["values"][name]["value"] == pytest.approx(mean, abs=1e-12)
    assert "asymmetric Shapley value" in render_markdown(report)


def test_a_precedence_naming_no_owner_or_without_the_asymmetric_estimator_is_refused():
    from common.config.games import ValuationSettings
    from server.federation.local_job import make_value_job

    with pytest.raises(FairPoolError, match="needs the `estimator` asymmetric"):
        ValuationSettings(precedence=("a<b",))
    with pytest.raises(FairPoolError, match="`precedence` 'a<ghost': ghost not among the owners"):
        make_value_job({"a": "a.jsonl", "b": "b.jsonl"}, "eval.jsonl", "out",
                       valuation=ValuationSettings(estimator="asymmetric", precedence=("a<ghost",)))
