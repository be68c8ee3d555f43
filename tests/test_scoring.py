"""Coordinator scoring with real adapters: the arithmetic at model level and validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common.data import load_preferences
from common.model.base import load_base_model
from common.model.lora import expected_adapter_shapes, load_adapters
from common.valuation.composition import compose_logprobs
from common.valuation.utility import all_masks, coalition_margins
from server.valuation.pipeline import Submission, rejection_reason
from server.valuation.scoring import pair_logprobs, score_evaluation


@pytest.fixture(scope="module")
def two_adapters(quick_adapters):
    return {name: quick_adapters[name].tensors for name in ("clean-small", "flipped")}


@pytest.fixture(scope="module")
def eval_pairs(default_market):
    return load_preferences(default_market.eval_path)[0][:24]


def _fresh_single(spec, tensors):
    model, tokenizer = load_base_model(spec.base_model)
    return load_adapters(model, spec, {"only": tensors}), tokenizer


def test_empty_and_single_coalitions_match_real_models(fast_spec, two_adapters, eval_pairs):
    model, tokenizer = load_base_model(fast_spec.base_model)
    names = list(two_adapters)
    peft = load_adapters(model, fast_spec, two_adapters)
    scored = score_evaluation(peft, tokenizer, names, eval_pairs, fast_spec.max_length)

    plain, _ = load_base_model(fast_spec.base_model)
    base_lp = pair_logprobs(plain, tokenizer, eval_pairs, fast_spec.max_length)[0]
    owners = scored.owner_chosen
    # S = ∅ is the base model's own log-probs.
    np.testing.assert_array_equal(compose_logprobs(scored.base_chosen, owners, []), scored.base_chosen)
    np.testing.assert_allclose(scored.base_chosen, base_lp, rtol=0, atol=1e-5)
    # |S| = 1 is exactly the single adapter's model, loaded on its own.
    for i, name in enumerate(names):
        single, _ = _fresh_single(fast_spec, two_adapters[name])
        single_lp = pair_logprobs(single, tokenizer, eval_pairs, fast_spec.max_length)[0]
        np.testing.assert_allclose(compose_logprobs(scored.base_chosen, owners, [i]), single_lp, atol=1e-5)
    # The adapters really differ from the base and from each other.
    assert np.abs(owners[0] - scored.base_chosen).max() > 1e-3
    assert np.abs(owners[0] - owners[1]).max() > 1e-3


def test_coalition_margin_is_the_pairwise_difference_of_composed_logprobs(fast_spec, two_adapters, eval_pairs):
    """m_S from margins equals the margin of the composed sequence log-probs (c(x) cancels)."""
    model, tokenizer = load_base_model(fast_spec.base_model)
    peft = load_adapters(model, fast_spec, two_adapters)
    s = score_evaluation(peft, tokenizer, list(two_adapters), eval_pairs, fast_spec.max_length)
    for mask in all_masks(2):
        members = [i for i in range(2) if mask >> i & 1]
        lp_c = compose_logprobs(s.base_chosen, s.owner_chosen, members)
        lp_r = compose_logprobs(s.base_rejected, s.owner_rejected, members)
        expected = (lp_c - s.base_chosen) - (lp_r - s.base_rejected)
        got = coalition_margins(s.margins, np.array([mask]))[0]
        np.testing.assert_allclose(got, expected, atol=1e-9)


def _good(spec, tensors):
    return Submission("x", tensors=dict(tensors), num_examples=10)


def test_rejection_reasons(fast_spec, two_adapters):
    base, _ = load_base_model(fast_spec.base_model)
    expected = expected_adapter_shapes(fast_spec, base)
    tensors = two_adapters["flipped"]
    assert rejection_reason(_good(fast_spec, tensors), expected, fast_spec.lora_r) is None
    name = next(iter(tensors))
    wrong_shape = {**tensors, name: np.zeros((3, 3), np.float32)}
    assert "shape" in rejection_reason(_good(fast_spec, wrong_shape), expected, fast_spec.lora_r)
    nan = {**tensors, name: np.full_like(tensors[name], np.nan)}
    assert "non-finite" in rejection_reason(_good(fast_spec, nan), expected, fast_spec.lora_r)
    missing = dict(list(tensors.items())[1:])
    assert "names" in rejection_reason(_good(fast_spec, missing), expected, fast_spec.lora_r)
    doubles = {k: v.astype(np.float64) for k, v in tensors.items()}
    assert "dtype" in rejection_reason(_good(fast_spec, doubles), expected, fast_spec.lora_r)
    tampered = dataclasses.replace(_good(fast_spec, tensors), claimed_sha256="0" * 64)
    assert "digest" in rejection_reason(tampered, expected, fast_spec.lora_r)
    assert rejection_reason(Submission("x", error="boom"), expected, fast_spec.lora_r) == "boom"
