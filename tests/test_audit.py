"""The audit (``--audit K``): which coalitions, which stages, consent, and retrained utilities that
equal an independently run sequential DPO chain (server/studies/sequential.py)."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.audit import audit_consent, stage_seed, train_stage
from client.owner import NODE_AUDIT_KEY, OwnerIdentity, resolve_identity
from client.trainer import train_adapter
from common.config.games import ValuationSettings
from common.config.job import OwnerEntry, ValuationJob
from common.config.spec import TrainingSpec
from common.data import load_preferences
from common.embedded.market import default_profiles, make_market
from common.errors import ConfigError, FairPoolError
from common.model.base import load_spec_model
from common.model.lora import load_adapters, merge_chain
from common.valuation.audit_plan import ENUMERATE_MAX_PLAYERS, audited_coalitions, stage_plan
from common.valuation.bits import mask_of
from common.valuation.preference_game import preference_game
from common.wire.messages import AuditConsent, Roster, StageRequest, WireError
from server.studies.sequential import train_sequential_orders
from server.valuation.audit import StageOutcome, StageTask, run_audit
from server.valuation.scoring import ModelScorer, score_evaluation

# ---------------------------------------------------------------- the plan (pure)


@given(n=st.integers(0, 16), k=st.integers(0, 40), seed=st.integers(0, 5))
@settings(max_examples=120, deadline=None)
def test_audited_coalitions_are_distinct_proper_and_always_hold_the_grand_coalition(n, k, seed):
    chosen = audited_coalitions(n, k, seed)
    possible = 2**n - n - 1 if n >= 2 else 0  # coalitions of two or more owners
    assert len(chosen) == min(k, possible)
    assert len(set(chosen)) == len(chosen)
    assert all(len(c) >= 2 and list(c) == sorted(set(c)) and all(0 <= i < n for i in c) for c in chosen)
    if chosen:
        assert tuple(range(n)) in chosen
    assert chosen == sorted(chosen, key=lambda c: (len(c), c))
    assert chosen == audited_coalitions(n, k, seed)  # seeded: the same audit every time


def test_audited_coalitions_are_a_seeded_sample_and_all_of_them_when_k_is_large():
    every = [c for size in range(2, 5) for c in itertools.combinations(range(4), size)]
    assert audited_coalitions(4, 100, 0) == every
    samples = {tuple(audited_coalitions(6, 4, seed)) for seed in range(8)}
    assert len(samples) > 1  # the seed chooses
    large = audited_coalitions(ENUMERATE_MAX_PLAYERS + 4, 5, 1)  # drawn without listing 2ⁿ coalitions
    assert len(large) == 5 and tuple(range(ENUMERATE_MAX_PLAYERS + 4)) in large
    with pytest.raises(ValueError):
        audited_coalitions(3, -1, 0)


@given(st.lists(st.permutations(range(5)).map(lambda p: tuple(p[: max(2, len(p) - 1)])), min_size=1, max_size=6))
def test_stage_plan_trains_each_shared_prefix_once_after_its_parent(orders):
    plan = stage_plan(orders)
    flat = [p for depth in plan for p in depth]
    assert len(flat) == len(set(flat))
    needed = {tuple(o[:k]) for o in orders for k in range(2, len(o) + 1)}
    assert set(flat) == needed
    for d, depth in enumerate(plan):
        assert all(len(p) == d + 2 for p in depth)  # depth by depth: a parent is ready before its child


def test_stage_plan_of_roster_ordered_coalitions_shares_the_grand_chain():
    coalitions = audited_coalitions(3, 4, 0)  # all four of 3 owners
    assert stage_plan(coalitions) == [[(0, 1), (0, 2), (1, 2)], [(0, 1, 2)]]  # 4 fine-tunings, not 5


# ---------------------------------------------------------------- wire and consent


def test_audit_messages_round_trip_and_refuse_what_they_cannot_read():
    request = StageRequest("run-1", ("a", "b", "c"))
    assert StageRequest.from_record(request.to_record()) == request
    with pytest.raises(WireError):
        StageRequest.from_record({**request.to_record(), "order": ["a"]})
    with pytest.raises(WireError):
        StageRequest.from_record({**request.to_record(), "wire_version": 99})
    consent = AuditConsent("a", True)
    assert AuditConsent.from_record(consent.to_record()) == consent
    assert not AuditConsent.from_record({"owner": "a", "allowed": "yes"}).allowed  # only a real true consents
    other = AuditConsent.from_record({**consent.to_record(), "wire_version": 99})
    assert not other.allowed and "wire version" in other.reason


def test_consent_comes_from_the_node_config_or_the_simulated_roster():
    config = {"owner-name": "acme", "data-path": "/d.jsonl"}
    assert not resolve_identity(config, None).allow_audit  # no consent unless given
    for value in (True, "true", "yes", "1"):
        assert resolve_identity({**config, NODE_AUDIT_KEY: value}, None).allow_audit
    assert not resolve_identity({**config, NODE_AUDIT_KEY: "false"}, None).allow_audit
    with pytest.raises(FairPoolError, match="allow-audit must be true or false"):
        resolve_identity({**config, NODE_AUDIT_KEY: "perhaps"}, None)
    roster = Roster(("a", "b"), ("a.jsonl", "b.jsonl"), ("", ""), ("", ""), (0, 0), allow_audit=(True, False))
    record = Roster.from_record(roster.to_record()).to_record()
    assert [resolve_identity({"partition-id": i}, record).allow_audit for i in (0, 1)] == [True, False]
    assert audit_consent(resolve_identity({"partition-id": 1}, record)).reason == \
        "a simulated owner named in `refuse_audit`"
    old = {k: v for k, v in roster.to_record().items() if k != "allow_audit"}  # an older coordinator
    assert not resolve_identity({"partition-id": 0}, Roster.from_record(old).to_record()).allow_audit


def test_an_owner_without_consent_or_data_declines_and_never_trains_a_stage(fast_spec):
    refusing = OwnerIdentity("a", "a.jsonl")
    assert audit_consent(refusing) == AuditConsent("a", False, "its node config does not set allow-audit = true")
    assert "existing adapter" in audit_consent(OwnerIdentity("b", "", adapter_path="/x", allow_audit=True)).reason
    with pytest.raises(FairPoolError, match="takes no part in the audit"):
        train_stage(fast_spec, refusing, StageRequest("r", ("b", "a")), [{}])
    with pytest.raises(FairPoolError, match="this owner is 'a'"):
        train_stage(fast_spec, replace(refusing, allow_audit=True), StageRequest("r", ("a", "b")), [{}])


def test_audit_is_a_setting_checked_like_the_others():
    assert ValuationSettings().audit == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="`audit`"):
            ValuationSettings(audit=bad)
    with pytest.raises(ConfigError, match="`allow_audit`"):
        ValuationJob("r", (OwnerEntry("a", "a.jsonl", allow_audit="no"),), "e.jsonl", "out",  # type: ignore[arg-type]
                     spec=TrainingSpec(base_model="-"))


# ---------------------------------------------------------------- the audit against sequential DPO


class InProcessOwners:
    """The owners' side of the audit run here (what each node's ClientApp calls), for checking
    the plan and the arithmetic without starting Flower: the Flower path is test_audit_flower."""

    def __init__(self, spec, identities: dict[str, OwnerIdentity]) -> None:
        self.spec, self.identities = spec, identities
        self.trained: list[tuple[str, ...]] = []

    def consent(self, owners):
        answers = {name: audit_consent(self.identities[name]) for name in owners}
        return {name: a.reason for name, a in answers.items() if not a.allowed}

    def train_stages(self, tasks: list[StageTask]):
        out = {}
        for task in tasks:
            try:
                result = train_stage(self.spec, self.identities[task.owner], StageRequest("r", task.order),
                                     list(task.chain))
                out[task.order] = StageOutcome(result.tensors)
                self.trained.append(task.order)
            except FairPoolError as exc:
                out[task.order] = StageOutcome(error=str(exc))
        return out


@pytest.fixture(scope="module")
def micro(tmp_path_factory, base_model_dir):
    """A 3-owner micro market (16 examples each), its owners' own adapters and their scoring."""
    from common.embedded.default_job import spec_for

    market = make_market(tmp_path_factory.mktemp("audit-market"), seed=2, profiles=default_profiles(16)[:4],
                         eval_size=30)
    spec = spec_for(str(base_model_dir), epochs=1.0)
    names = ["clean", "noisy", "flipped"]
    data = {n: load_preferences(market.owners[n])[0] for n in names}
    results = {n: train_adapter(spec, data[n]) for n in names}
    evaluation = load_preferences(market.eval_path)[0]
    base, tokenizer = load_spec_model(spec)
    scored = score_evaluation(load_adapters(base, spec, {n: results[n].tensors for n in names}), tokenizer, names,
                              evaluation, spec.max_length)
    return market, spec, names, data, results, evaluation, scored


def _job(spec, names, market, audit: int) -> ValuationJob:
    return ValuationJob("r", tuple(OwnerEntry(n, str(market.owners[n])) for n in names), str(market.eval_path),
                        "out", spec=spec, valuation=ValuationSettings(audit=audit))


def test_the_audit_retrains_what_sequential_dpo_trains_and_compares_it_with_the_game(micro):
    market, spec, names, data, results, evaluation, scored = micro
    sizes = [results[n].num_examples for n in names]
    owners = InProcessOwners(spec, {n: OwnerIdentity(n, str(market.owners[n]), allow_audit=True) for n in names})
    job = _job(spec, names, market, audit=4)
    block = run_audit(job, names, sizes, scored.margins, {n: results[n].tensors for n in names}, evaluation, owners)

    assert [r["members"] for r in block["coalitions"]] == [["clean", "noisy"], ["clean", "flipped"],
                                                           ["noisy", "flipped"], ["clean", "noisy", "flipped"]]
    assert block["skipped"] == [] and block["declined"] == {}
    assert block["fine_tunings"] == 4 == len(owners.trained)  # the grand chain reuses clean → noisy
    assert block["wall_s"] > 0

    # independently: the study's sequential DPO of the grand coalition, stage 1 = clean's own adapter
    chains = {}
    train_sequential_orders(spec, [data[n] for n in names], [(0, 1, 2)], lambda o, r: chains.update({o: r.model}),
                            first={0: lambda: merge_chain(load_spec_model(spec)[0], spec, [results["clean"].tensors])})
    expected = ModelScorer(spec, evaluation).utilities_of(chains[(0, 1, 2)], ["accuracy", "logsigmoid"])
    grand = block["coalitions"][-1]
    assert grand["retrained"]["preference"] == pytest.approx(expected["accuracy"], abs=1e-9)
    assert grand["retrained"]["preference-logsigmoid"] == pytest.approx(expected["logsigmoid"], abs=1e-6)

    # the arithmetic side is the game's own utility of that coalition (size rule, as valued)
    for row in block["coalitions"]:
        mask = mask_of([names.index(m) for m in row["members"]])
        for utility, metric in (("preference", "accuracy"), ("preference-logsigmoid", "logsigmoid")):
            game = preference_game(names, scored.margins, metric, job.composition, sizes, spec.beta)
            assert row["arithmetic"][utility] == pytest.approx(float(game.utilities([mask])[0]), abs=1e-12)
            assert row["error"][utility] == pytest.approx(row["arithmetic"][utility] - row["retrained"][utility])
    arith = [r["arithmetic"]["preference-logsigmoid"] for r in block["coalitions"]]
    again = [r["retrained"]["preference-logsigmoid"] for r in block["coalitions"]]
    agreement = block["agreement"]["preference-logsigmoid"]
    assert agreement["max_abs_error"] == pytest.approx(max(abs(a - b) for a, b in zip(arith, again)))
    assert agreement["pearson"] == pytest.approx(float(np.corrcoef(arith, again)[0, 1]), abs=1e-9)


def test_coalitions_with_an_owner_who_did_not_consent_are_skipped_and_said_so(micro):
    market, spec, names, data, results, evaluation, scored = micro
    consents = {"clean": True, "noisy": True, "flipped": False}
    owners = InProcessOwners(spec, {n: OwnerIdentity(n, str(market.owners[n]), allow_audit=consents[n])
                                    for n in names})
    block = run_audit(_job(spec, names, market, audit=4), names, [results[n].num_examples for n in names],
                      scored.margins, {n: results[n].tensors for n in names}, evaluation, owners)
    assert [r["members"] for r in block["coalitions"]] == [["clean", "noisy"]]
    assert block["declined"] == {"flipped": "its node config does not set allow-audit = true"}
    assert [(s["members"], s["reason"]) for s in block["skipped"]] == [
        (["clean", "flipped"], "no consent from flipped"), (["noisy", "flipped"], "no consent from flipped"),
        (["clean", "noisy", "flipped"], "no consent from flipped")]
    assert block["fine_tunings"] == 1 and owners.trained == [("clean", "noisy")]  # nothing trained in vain
    assert block["agreement"]["preference"]["pearson"] is None  # one point: no correlation, not a made-up one


def test_a_failed_stage_skips_its_chains_with_the_owners_reason(micro):
    market, spec, names, data, results, evaluation, scored = micro

    class Failing(InProcessOwners):
        def train_stages(self, tasks):
            trained = super().train_stages([t for t in tasks if t.owner != "noisy"])
            return {**trained, **{t.order: StageOutcome(error="disk full") for t in tasks if t.owner == "noisy"}}

    owners = Failing(spec, {n: OwnerIdentity(n, str(market.owners[n]), allow_audit=True) for n in names})
    block = run_audit(_job(spec, names, market, audit=4), names, [results[n].num_examples for n in names],
                      scored.margins, {n: results[n].tensors for n in names}, evaluation, owners)
    # clean → noisy failed at noisy, and the grand chain grows from it: neither is compared
    assert [r["members"] for r in block["coalitions"]] == [["clean", "flipped"], ["noisy", "flipped"]]
    reasons = {tuple(s["members"]): s["reason"] for s in block["skipped"]}
    assert reasons == {("clean", "noisy"): "stage 2 (noisy) failed: disk full",
                       ("clean", "noisy", "flipped"): "stage 2 (noisy) failed: disk full"}
    assert block["fine_tunings"] == 2
    assert stage_seed(spec, 3) == spec.seed + 2 and stage_seed(spec, 1) == spec.seed


def test_fewer_than_two_owners_is_no_audit(micro):
    market, spec, names, _data, results, evaluation, scored = micro
    block = run_audit(_job(spec, names[:1], market, audit=3), names[:1], [results["clean"].num_examples],
                      scored.margins[:1], {"clean": results["clean"].tensors}, evaluation,
                      InProcessOwners(spec, {}))
    assert block["coalitions"] == [] and block["fine_tunings"] == 0 and "fewer than two" in block["note"]


# ---------------------------------------------------------------- through the federation's messages


def test_a_deployed_federation_audits_over_its_nodes_with_node_config_consent(tmp_path, micro):
    """The coordinator's GridRetrainer and the real ClientApp (tests/local_federation.py: only the
    transport is replaced); consent is each node's own ``allow-audit``; a resumed run reads the audit."""
    from tests.local_federation import make_federation, run

    market, spec, names, _data, _results, _evaluation, _scored = micro
    fed = make_federation(tmp_path, spec, {n: market.owners[n] for n in names}, market.eval_path,
                          composition="size")
    fed.job = replace(fed.job, valuation=ValuationSettings(audit=4))
    for config in fed.node_configs:
        if config["owner-name"] != "flipped":
            config[NODE_AUDIT_KEY] = True  # TOML's allow-audit = true
    report, grid = run(fed)
    assert report is not None
    audit = report["audit"]
    assert grid.trainings == 3 + 1  # three owners' adapters, then the one consented stage: clean → noisy
    assert [r["members"] for r in audit["coalitions"]] == [["clean", "noisy"]]
    assert audit["declined"] == {"flipped": "its node config does not set allow-audit = true"}
    assert len(audit["skipped"]) == 3 and audit["fine_tunings"] == 1
    row = audit["coalitions"][0]
    assert 0 <= row["retrained"]["preference"] <= 1 and row["arithmetic"]["preference"] == pytest.approx(
        _table_utility(report, ["clean", "noisy"]))

    again, grid = run(fed)  # the same job again: adapters and audit come from the ledger
    assert again is not None and grid.trainings == 0
    assert again["audit"]["coalitions"] == audit["coalitions"]


def _table_utility(report: dict, members: list[str]) -> float:
    """The preference game's utility of ``members`` as the report's coalition table lists it."""
    game = next(g for g in report["games"] if g["utility"] == "preference")
    return next(row["value"] for row in game["coalitions"] if sorted(row["members"]) == sorted(members))


# ---------------------------------------------------------------- in Flower's Simulation Engine


@pytest.mark.slow
def test_fairpool_value_audits_a_micro_market_in_the_simulation_engine(tmp_path, base_model_dir, capsys):
    """``fairpool value --audit 4`` on 3 owners: every coalition of two or more is retrained by
    sequential DPO across the simulated owners' nodes, and every report file says how it went."""
    import json

    from server.cli.main import main

    market = make_market(tmp_path / "m", seed=2, profiles=default_profiles(16)[:4], eval_size=30)
    owners = [a for n in ("clean", "noisy", "flipped") for a in ("--owner", f"{n}={market.owners[n]}")]
    out = tmp_path / "out"
    code = main(["value", *owners, "--eval", str(market.eval_path), "--base-model", str(base_model_dir),
                 "--epochs", "1", "--audit", "4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    audit = json.loads((out / "report.json").read_text())["audit"]
    assert [r["members"] for r in audit["coalitions"]] == [["clean", "noisy"], ["clean", "flipped"],
                                                           ["noisy", "flipped"], ["clean", "noisy", "flipped"]]
    assert audit["fine_tunings"] == 4 and audit["skipped"] == [] and audit["declined"] == {}
    for row in audit["coalitions"]:
        assert 0 <= row["retrained"]["preference"] <= 1 and row["retrained"]["preference-logsigmoid"] < 0
    assert set(audit["agreement"]) == {"preference", "preference-logsigmoid"}
    assert "really retrained 4 coalition(s) by sequential DPO" in printed
    assert "## Audit: arithmetic against really retrained coalitions" in (out / "report.md").read_text()
    assert 'id="audit"' in (out / "report.html").read_text()
    assert (out / "audit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_audit_that_fails_keeps_the_valuation_and_says_why(micro):
    from server.valuation.pipeline import Scored, audit_stage

    market, spec, names, _data, results, evaluation, scored = micro

    class Unreachable:
        def consent(self, owners):
            raise FairPoolError("the simulation has 1 SuperNode(s) for 3 owners")

        def train_stages(self, tasks):
            raise AssertionError("never asked")

    valued = Scored(names, [results[n].num_examples for n in names], ["d"] * 3, scored.margins, None, None,
                    list(evaluation))
    block = audit_stage(_job(spec, names, market, audit=2), valued, {n: results[n].tensors for n in names},
                        Unreachable(), None, lambda *_a, **_k: None)
    assert block["coalitions"] == [] and block["note"] == "the audit failed: the simulation has 1 SuperNode(s) for 3 owners"


def test_audit_options_are_checked_before_anything_is_written(micro, tmp_path, capsys):
    from server.cli.main import main

    market = micro[0]
    common = ["value", "--owner", f"clean={market.owners['clean']}", "--owner", f"noisy={market.owners['noisy']}",
              "--eval", str(market.eval_path), "--out", str(tmp_path / "out")]
    assert main([*common, "--audit", "2", "--refuse-audit", "ghost"]) == 2
    assert "--refuse-audit names ghost, not an owner of this valuation" in capsys.readouterr().err
    assert main([*common, "--audit", "-1"]) == 2
    assert "--audit must be a whole number of coalitions ≥ 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_node_that_never_answers_the_consent_question_is_left_out_not_waited_for(tmp_path, micro):
    from tests.local_federation import make_federation, run

    market, spec, names, _data, _results, _evaluation, _scored = micro
    fed = make_federation(tmp_path, spec, {n: market.owners[n] for n in names}, market.eval_path,
                          owner_timeout_s=2.0)
    fed.job = replace(fed.job, valuation=ValuationSettings(audit=1))
    for config in fed.node_configs:
        config[NODE_AUDIT_KEY] = True

    def silent_noisy(node, reply):  # noisy's node answers training but never the consent question
        return None if "consent" in reply.content and fed.node_configs[node - 1]["owner-name"] == "noisy" else reply

    started = time.monotonic()
    report, grid = run(fed, intercept=silent_noisy)
    assert report is not None and time.monotonic() - started < 60
    assert report["audit"]["declined"] == {"noisy": "no answer within 2s"}
    assert report["audit"]["skipped"] == [{"members": names, "reason": "no consent from noisy"}]
    assert report["audit"]["coalitions"] == [] and grid.trainings == 3  # no stage was sent
