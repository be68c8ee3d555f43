"""The valuation pipeline's stages on their own (issue 13): each takes only what it needs."""

from __future__ import annotations

import numpy as np
import pytest

from common.config.job import OwnerEntry
from common.errors import FairPoolError
from common.trust.adapter_checks import AdapterLimits
from server.valuation.pipeline import ResultStore, Submission, admit_submissions, pay

SHAPES = {"layer.lora_A.weight": (2, 4), "layer.lora_B.weight": (4, 2)}


def _tensors(seed: int, scale: float = 0.01) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in SHAPES.items()}


def test_admit_lists_every_owner_and_enforces_the_quorum():
    owners = [OwnerEntry("a", "a.jsonl"), OwnerEntry("b", "b.jsonl"), OwnerEntry("c", "c.jsonl")]
    subs = [Submission("a", tensors=_tensors(1), num_examples=5), Submission("b", error="training failed: boom")]
    events = []
    admitted = admit_submissions(owners, subs, SHAPES, rank=2, limits=AdapterLimits(), composition="sum",
                                 min_owners=1, progress=lambda *a, **k: events.append(a))
    assert [o["name"] for o in admitted.owners] == ["a", "b", "c"]
    assert [o["status"] for o in admitted.owners] == ["valued", "rejected", "rejected"]
    assert [o["reason"] for o in admitted.owners] == [None, "training failed: boom", "no reply from this owner"]
    assert [s.owner for s in admitted.accepted] == ["a"] and admitted.flags == []
    assert len(events) == 3
    with pytest.raises(FairPoolError, match="only 1 owner\\(s\\) accepted, fewer than the required 2: b: training"):
        admit_submissions(owners, subs, SHAPES, rank=2, limits=AdapterLimits(), composition="sum", min_owners=2,
                          progress=lambda *a, **k: None)


def test_admit_flags_a_copied_adapter():
    owners = [OwnerEntry("a", "a.jsonl"), OwnerEntry("copy", "c.jsonl")]
    same = _tensors(3)
    subs = [Submission("a", tensors=same, num_examples=5), Submission("copy", tensors=dict(same), num_examples=5)]
    admitted = admit_submissions(owners, subs, SHAPES, rank=2, limits=AdapterLimits(), composition="sum",
                                 min_owners=1, progress=lambda *a, **k: None)
    assert [f["owners"] for f in admitted.flags] == [["a", "copy"]]


def _game(kind: str) -> dict:
    return {"utility": "preference", "kind": kind, "values": {"a": {"value": 0.3}, "b": {"value": -0.1}}}


def test_pay_states_the_kind_and_refuses_a_non_efficient_one():
    paid = pay([_game("shapley")], "preference", 10.0, "positive")
    assert paid["kind"] == "shapley" and paid["shares"] == {"a": 1.0, "b": 0.0} and paid["flagged"] == ["b"]
    with pytest.raises(ValueError, match="banzhaf values are not Shapley values"):
        pay([_game("banzhaf")], "preference", 10.0, "positive")
    assert pay([_game("banzhaf")], "preference", 10.0, "normalised")["kind"] == "banzhaf"


def test_the_ledger_is_a_result_store_and_a_plain_memo_is_not(tmp_path):
    from server.federation.ledger import Ledger

    class UtilityMemo:  # a UtilityStore only: utilities are memoised, finished games are not kept
        def load_utilities(self, game_key, masks):
            return {}

        def save_utilities(self, game_key, values):
            pass

    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert isinstance(ledger, ResultStore)
    assert not isinstance(UtilityMemo(), ResultStore)
