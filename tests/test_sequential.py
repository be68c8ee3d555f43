"""Really retrained coalitions: sequential DPO chains references; union pools data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from client.trainer import train_adapter
from common.data import load_preferences
from common.embedded.base_model import model_fingerprint
from common.model.base import load_base_model
from common.model.lora import load_adapters
from server.studies.sequential import train_sequential, train_union
from server.valuation.scoring import pair_logprobs


@pytest.fixture(scope="module")
def owners(default_market):
    return {name: load_preferences(default_market.owners[name])[0][:32] for name in ("clean", "flipped")}


def _logprobs(model, tokenizer, examples, spec):
    return pair_logprobs(model, tokenizer, examples, spec.max_length)[0]


def test_one_stage_equals_the_owner_adapter_merged(fast_spec, owners, default_market):
    evaluation = load_preferences(default_market.eval_path)[0][:16]
    chain = train_sequential(fast_spec, [owners["clean"]])
    single = train_adapter(fast_spec, owners["clean"])
    base, tokenizer = load_base_model(fast_spec.base_model)
    with_adapter = load_adapters(base, fast_spec, {"clean": single.tensors})
    np.testing.assert_allclose(_logprobs(chain.model, chain.tokenizer, evaluation, fast_spec),
                               _logprobs(with_adapter, tokenizer, evaluation, fast_spec), atol=1e-4)


def test_each_stage_uses_the_previous_stage_as_reference(fast_spec, owners):
    """Stage 2 starts with policy = reference only if its reference is the stage-1 model:
    its first DPO loss (one full-batch step) is then exactly log 2. Against π₀ it would not be."""
    spec = dataclasses.replace(fast_spec, epochs=1.0, batch_size=32)
    chain = train_sequential(spec, [owners["clean"], owners["flipped"]])
    assert len(chain.stage_metrics) == 2
    assert chain.stage_metrics[1]["train_loss"] == pytest.approx(np.log(2), abs=1e-4)
    base, _ = load_base_model(spec.base_model)
    assert model_fingerprint(chain.model) != model_fingerprint(base)


def test_union_trains_on_the_pooled_data(fast_spec, owners):
    result = train_union(fast_spec, [owners["clean"], owners["flipped"]])
    assert result.num_examples == 64


def test_orders_sharing_prefixes_train_each_prefix_once_and_equal_separate_chains(fast_spec, owners,
                                                                                 default_market):
    """Issue 17 #3: the trie of orders trains (0), (0,1), (1), (1,0) once each — 4 stages, not
    6 — and each order's model is the model its own chain gives."""
    from server.studies.sequential import train_sequential_orders

    spec = dataclasses.replace(fast_spec, epochs=1.0)
    data = [owners["clean"][:16], owners["flipped"][:16]]
    evaluation = load_preferences(default_market.eval_path)[0][:12]
    seen: dict[tuple[int, ...], np.ndarray] = {}
    metrics: dict[tuple[int, ...], int] = {}

    def visit(order, chain):
        seen[order] = _logprobs(chain.model, chain.tokenizer, evaluation, spec)
        metrics[order] = len(chain.stage_metrics)

    orders = [(0,), (0, 1), (1, 0)]
    assert train_sequential_orders(spec, data, orders, visit) == 4
    assert set(seen) == set(orders) and metrics == {(0,): 1, (0, 1): 2, (1, 0): 2}
    for order in [(0, 1), (1, 0)]:
        alone = train_sequential(spec, [data[i] for i in order])
        np.testing.assert_allclose(seen[order], _logprobs(alone.model, alone.tokenizer, evaluation, spec), atol=1e-4)
    # a given first stage (the owner's own adapter, merged) is used instead of training it
    single = train_adapter(spec, data[1])
    base, _ = load_base_model(spec.base_model)
    merged = load_adapters(base, spec, {"flipped": single.tensors}).merge_and_unload()
    seen.clear()
    assert train_sequential_orders(spec, data, [(1, 0)], visit, first={1: lambda: merged}) == 1
    alone = train_sequential(spec, [data[1], data[0]])
    np.testing.assert_allclose(seen[(1, 0)], _logprobs(alone.model, alone.tokenizer, evaluation, spec), atol=1e-4)
