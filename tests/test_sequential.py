"""Really retrained coalitions: sequential DPO chains references; union pools data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from client.trainer import train_adapter
from common.data import load_preferences
from common.embedded.base_model import model_fingerprint
from common.model.base import load_base_model
from server.studies.sequential import train_sequential, train_union
from server.valuation.scoring import load_adapters, pair_logprobs


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
