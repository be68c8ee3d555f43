"""Replication-robust payout (common.valuation.replicas, the ``robust`` policy): copying never pays.

The end-to-end property runs the coordinator's pipeline on adapters really trained with DPO on
the embedded market: a byte copy of ``clean``, a near-copy (a random 80% of its rows) and a
split of ``clean`` into two owners each earn together at most what ``clean`` earns without
them, and with no copy the policy pays every honest owner what plain Shapley pays.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config.job import OwnerEntry, ValuationJob
from common.valuation.game import Game
from common.valuation.payout import payout_shares
from common.valuation.preference_game import all_coalition_utilities
from common.valuation.replicas import (
    ReplicaGroup,
    margin_similarity,
    quotient_game,
    replica_groups,
    split_group_values,
)
from common.valuation.shapley import exact_shapley
from server.valuation.pipeline import Submission, value_submissions

HONEST = ("clean", "clean-small", "noisy", "flipped")


# --- the pure parts -------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(1, 30), st.integers(0, 10_000))
def test_margin_similarity_is_one_exactly_for_identical_behaviour(n: int, pairs: int, seed: int) -> None:
    M = np.random.default_rng(seed).normal(size=(n, pairs))
    M[1] = M[0]
    S = margin_similarity(M)
    assert np.allclose(S, S.T) and np.allclose(np.diag(S), 1.0) and np.all(np.abs(S) <= 1.0)
    assert S[0, 1] == pytest.approx(1.0)
    others = S[np.triu_indices(n, 1)][1:]
    assert np.all(others < 1.0)


def test_margin_similarity_penalises_strength_as_well_as_direction() -> None:
    """Same direction, twice the margins: 2·2/(1+4) = 0.8, where a cosine would say 1."""
    row = np.array([1.0, -2.0, 3.0])
    S = margin_similarity(np.stack([row, 2 * row, -row, np.zeros(3)]))
    assert S[0, 1] == pytest.approx(0.8) and S[0, 2] == pytest.approx(-1.0) and S[0, 3] == 0.0


def test_replica_groups_are_connected_components_with_the_best_alone_representing() -> None:
    S = np.eye(5)
    S[0, 3] = S[3, 0] = 0.97  # 0 ~ 3
    S[3, 4] = S[4, 3] = 0.99  # 3 ~ 4, so 0, 3, 4 are one source (a copy of a copy)
    S[1, 2] = S[2, 1] = 0.90  # below the threshold
    groups = replica_groups(S, 0.95, standalone=[0.7, 0.9, 0.8, 0.75, 0.75], strength=[0, 0, 0, 1, 2])
    assert [g.members for g in groups] == [(0, 3, 4), (1,), (2,)]
    assert groups[0].representative == 4  # 3 and 4 tie alone; 4's margins are stronger
    assert groups[0].similarity == 0.0 and groups[1].similarity == 1.0  # 0 and 4 are not directly similar
    with pytest.raises(ValueError, match="threshold"):
        replica_groups(S, 0.0, standalone=[0] * 5)


def test_group_values_split_by_positive_own_values_or_equally() -> None:
    groups = [ReplicaGroup((0, 2), 0), ReplicaGroup((1,), 1), ReplicaGroup((3, 4), 3)]
    values = split_group_values(groups, [0.6, -0.1, 0.4], own_values=[0.3, -0.1, 0.1, -1.0, -2.0])
    assert values == pytest.approx([0.45, -0.1, 0.15, 0.2, 0.2])


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 5), st.integers(1, 3), st.integers(0, 10_000))
def test_exact_copies_earn_together_what_the_original_earns_alone(n: int, copies: int, seed: int) -> None:
    """Random margins; owner 0 copied ``copies`` times: the quotient game is the market without
    the copies, coalition for coalition, so every share is the copy-free market's share."""
    M = np.random.default_rng(seed).normal(0.3, 1.0, size=(n, 40))
    alone = all_coalition_utilities(M)
    plain = payout_shares(dict(zip(map(str, range(n)), exact_shapley(alone, n))), policy="positive").shares
    big = np.vstack([M, np.repeat(M[:1], copies, axis=0)])
    names = [str(i) for i in range(n)] + [f"copy{k}" for k in range(copies)]
    game = Game.from_table(names, all_coalition_utilities(big))
    groups = replica_groups(margin_similarity(big), 1.0, game.utilities(1 << np.arange(len(names))))
    assert [g.members for g in groups][0] == (0, *range(n, n + copies))
    quotient = quotient_game(game, groups)
    assert np.allclose(quotient.utilities(np.arange(1 << n)), alone)
    values = split_group_values(groups, exact_shapley(quotient.utilities(np.arange(1 << n)), n),
                                exact_shapley(game.utilities(np.arange(1 << len(names))), len(names)))
    shares = payout_shares(dict(zip(names, values)), policy="robust",
                           replicas=[[names[i] for i in groups[0].members]]).shares
    assert sum(shares[m] for m in ["0", *names[n:]]) == pytest.approx(plain["0"], abs=1e-12)
    assert all(shares[str(i)] == pytest.approx(plain[str(i)], abs=1e-12) for i in range(1, n))


def test_the_robust_description_names_the_groups_and_other_policies_refuse_them() -> None:
    p = payout_shares({"a": 0.2, "b": 0.2, "c": 0.1}, policy="robust", replicas=[["a", "b"]], threshold=0.95)
    assert p.replicas == (("a", "b"),) and "one source" in p.description and "a and b" in p.description
    assert "0.95" in p.description
    assert "no owners" in payout_shares({"a": 1.0}, policy="robust").description
    with pytest.raises(ValueError, match="robust"):
        payout_shares({"a": 0.2, "b": 0.2}, policy="positive", replicas=[["a", "b"]])


# --- end to end on the embedded market -------------------------------------------------------


def _trained(base_model_dir, default_market):
    """DPO adapters of the honest owners, the byte copy, a near-copy and the two halves of ``clean``."""
    from client.trainer import train_adapter
    from common.data import load_preferences
    from common.embedded.default_job import spec_for

    spec = spec_for(str(base_model_dir))  # the embedded default's training, as `fairpool demo` runs it
    data = {name: load_preferences(path)[0] for name, path in default_market.owners.items()}
    clean = data["clean"]
    data["near-copy"] = random.Random("near-copy").sample(clean, round(0.8 * len(clean)))
    order = list(range(len(clean)))
    random.Random("split").shuffle(order)
    data["clean-a"] = [clean[i] for i in sorted(order[: len(clean) // 2])]
    data["clean-b"] = [clean[i] for i in sorted(order[len(clean) // 2:])]
    # The byte copy of clean's file trains to clean's adapter byte for byte (seeded training; the
    # demo's end-to-end test checks it through Flower), so it is not trained a second time.
    assert default_market.owners["duplicate"].read_bytes() == default_market.owners["clean"].read_bytes()
    adapters = {name: train_adapter(spec, examples) for name, examples in data.items() if name != "duplicate"}
    return spec, {**adapters, "duplicate": adapters["clean"]}


def _shares(trained, default_market, tmp_path, names, policy="robust"):
    spec, adapters = trained
    job = ValuationJob(run_id="replicas", owners=tuple(OwnerEntry(n) for n in names), out_dir=str(tmp_path),
                       eval_path=str(default_market.eval_path), spec=spec, payout_policy=policy)
    subs = [Submission(n, tensors=adapters[n].tensors, num_examples=adapters[n].num_examples) for n in names]
    report = value_submissions(job, subs)
    return report["payout"]


@pytest.fixture(scope="session")
def markets(base_model_dir, default_market, tmp_path_factory, worker_id):
    """Each market's payout, from adapters DPO-trained at the default spec (about a minute).

    Computed once per session even with several pytest-xdist workers: the first worker to need
    it trains and writes the payouts (plain JSON) to the session's shared temporary root, the
    others wait on the lock and read them; the training is seeded, so every worker would have
    computed the same.
    """
    from filelock import FileLock

    session_root = tmp_path_factory.getbasetemp()  # this session's, shared by its workers when there are some
    shared = (session_root if worker_id == "master" else session_root.parent) / "replica-markets.json"
    with FileLock(str(shared) + ".lock"):
        if shared.is_file():
            return json.loads(shared.read_text())
        trained = _trained(base_model_dir, default_market)

        def run(names, policy="robust"):
            return _shares(trained, default_market, tmp_path_factory.mktemp("m"), names, policy)

        payouts = {
            "none": run(HONEST), "none-plain": run(HONEST, "positive"),
            "copy": run([*HONEST, "duplicate"]), "copy-plain": run([*HONEST, "duplicate"], "positive"),
            "near": run([*HONEST, "near-copy"]),
            "split": run(["clean-a", "clean-b", *HONEST[1:]]),
        }
        shared.write_text(json.dumps(payouts))
        return json.loads(shared.read_text())  # the same JSON values every worker reads


def test_copying_never_pays_in_the_embedded_market(markets) -> None:
    alone = markets["none"]["shares"]["clean"]
    for market, pair in [("copy", ("clean", "duplicate")), ("near", ("clean", "near-copy")),
                         ("split", ("clean-a", "clean-b"))]:
        payout = markets[market]
        together = sum(payout["shares"][o] for o in pair)
        assert together <= alone + 0.01, (market, together, alone)
        assert [sorted(r["owners"]) for r in payout["replicas"]] == [sorted(pair)], market
        assert "one source" in payout["policy_description"]


def test_with_no_copy_the_robust_policy_pays_what_shapley_pays(markets) -> None:
    robust, plain = markets["none"], markets["none-plain"]
    assert robust["replicas"] == [] and robust["policy"] == "robust"
    assert all(abs(robust["shares"][o] - plain["shares"][o]) <= 0.02 for o in HONEST)


def test_plain_shapley_stays_available_and_pays_the_copier_like_the_original(markets) -> None:
    plain = markets["copy-plain"]
    assert plain["policy"] == "positive" and "replicas" not in plain
    assert plain["shares"]["duplicate"] == pytest.approx(plain["shares"]["clean"])
    assert plain["shares"]["duplicate"] > 0.3  # the free-rider's take the robust policy removes


def _copy_market() -> tuple[Game, np.ndarray, np.ndarray]:
    """Owners a–f and ``a2``, a behavioural copy of a: the game and its margins, and the
    utilities of the market without the copy."""
    M = np.random.default_rng(7).normal(0.2, 1.0, size=(6, 50))
    big = np.vstack([M, M[:1]])
    return Game.from_table([*"abcdef", "a2"], all_coalition_utilities(big)), big, all_coalition_utilities(M)


@pytest.mark.parametrize("estimator, extra", [("asymmetric", {"precedence": ("b<a,a2",)}),
                                              ("permutation", {"max_evaluations": 60})])
def test_the_quotient_game_takes_the_jobs_estimator_and_its_precedence_between_groups(
        fast_spec, tmp_path, estimator, extra) -> None:
    from common.config.games import ValuationSettings
    from common.valuation.estimators import estimate
    from server.valuation.pipeline import robust_values

    game, margins, without = _copy_market()
    job = ValuationJob(run_id="q", owners=tuple(OwnerEntry(n) for n in game.players), eval_path="e", out_dir=str(tmp_path),
                       spec=fast_spec, valuation=ValuationSettings(estimator=estimator, **extra))
    own = estimate(game, "exact")
    paying = {"utility": "preference", "values": {p: {"value": float(v)} for p, v in zip(game.players, own.values)}}
    values, replicas = robust_values(job, paying, lambda: game, margins, lambda *a, **k: None)
    assert [r["owners"] for r in replicas] == [["a", "a2"]] and replicas[0]["representative"] == "a"
    reference = Game.from_table([*"abcdef"], without)
    if estimator == "asymmetric":  # b before a in the quotient game, as the precedence said of both copies
        expected = estimate(reference, "asymmetric", precedence=["b<a"]).values
        assert values["a"] + values["a2"] == pytest.approx(expected[0], abs=1e-12)
        assert [values[p] for p in "bcdef"] == pytest.approx(expected[1:], abs=1e-12)
    else:  # sampled: the group's value carries its standard error
        exact = estimate(reference, "exact").values
        assert replicas[0]["group_stderr"] > 0
        assert abs(replicas[0]["group_value"] - exact[0]) <= 4 * replicas[0]["group_stderr"] + 1e-9


def test_a_precedence_that_splits_a_replica_group_is_a_clear_error(fast_spec, tmp_path) -> None:
    from common.config.games import ValuationSettings
    from common.errors import FairPoolError
    from server.valuation.pipeline import robust_values

    game, margins, _ = _copy_market()
    job = ValuationJob(run_id="q", owners=tuple(OwnerEntry(n) for n in game.players), eval_path="e", out_dir=str(tmp_path),
                       spec=fast_spec, valuation=ValuationSettings(estimator="asymmetric", precedence=("a<b<a2",)))
    paying = {"utility": "preference", "values": {p: {"value": 0.1} for p in game.players}}
    with pytest.raises(FairPoolError, match="one source.*a and a2.*`payout_policy` positive"):
        robust_values(job, paying, lambda: game, margins, lambda *a, **k: None)


def test_without_similar_owners_the_payout_game_is_not_even_built(fast_spec, tmp_path) -> None:
    """A resumed reward game would load its decoder just to learn that nobody is grouped."""
    from server.valuation.pipeline import robust_values

    margins = np.random.default_rng(3).normal(size=(3, 40))
    job = ValuationJob(run_id="q", owners=tuple(OwnerEntry(n) for n in "abc"), eval_path="e", out_dir=str(tmp_path),
                       spec=fast_spec)
    paying = {"utility": "preference", "values": {p: {"value": v} for p, v in zip("abc", [0.3, -0.1, 0.2])}}

    def never() -> Game:
        raise AssertionError("the game was built")

    assert robust_values(job, paying, never, margins, lambda *a, **k: None) == ({"a": 0.3, "b": -0.1, "c": 0.2}, [])
