"""The composed decoder (server/valuation/decoding.py): exactness at ∅ and |S|=1, the composition formula,
cache vs no cache, seeds, common random numbers, batching, and adapter directories."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.valuation.composition import DEFAULT_FLOOR
from server.valuation.decoding import (
    BASE,
    CoalitionDecoder,
    DecodingConfig,
    generate_sequential_naive,
    load_adapter_dirs,
    save_adapter_dir,
    select_tokens,
    uniform_draws,
)

OWNERS = ("clean", "clean-small", "flipped")
# Different lengths, so batches are left-padded; "" starts from the BOS token.
PROMPTS = ["Describe the canal.", "What do you think of the mountain?", "Hi", "How was the playground today?", ""]
GREEDY = DecodingConfig(max_new_tokens=10)
SAMPLED = DecodingConfig(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=3)


def _tensors(quick_adapters, name):
    return quick_adapters[name].tensors


def _peft(base_model_dir, spec, adapters):
    from common.model.base import load_base_model
    from common.model.lora import load_adapters

    base, tokenizer = load_base_model(base_model_dir)
    return load_adapters(base, spec, adapters), tokenizer


@pytest.fixture(scope="module")
def loaded(base_model_dir, fast_spec, quick_adapters):
    return _peft(base_model_dir, fast_spec, {n: _tensors(quick_adapters, n) for n in OWNERS})


@pytest.fixture(scope="module")
def decoder(loaded):
    model, tokenizer = loaded
    return CoalitionDecoder(model, tokenizer, OWNERS, "sum")


def _greedy_reference(model, tokenizer, prompt: str, steps: int) -> list[int]:
    """Per-step argmax of a plain model on one unpadded prompt (no cache)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
    out = []
    with torch.inference_mode():
        for _ in range(steps):
            token = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            out.append(token)
    return out


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("bad", [dict(max_new_tokens=0), dict(max_new_tokens=2.5), dict(temperature=-0.1),
                                 dict(temperature=float("nan")), dict(top_p=0.0), dict(top_p=1.5),
                                 dict(seed=-1), dict(seed=1.0), dict(use_cache=1), dict(batch_size=0),
                                 dict(batch_size=True)])
def test_config_rejects_invalid_values(bad):
    with pytest.raises(ValueError):
        DecodingConfig(**bad)


def test_decoder_rejects_unknown_owners_and_bad_rules(loaded):
    model, tokenizer = loaded
    with pytest.raises(ValueError, match="no adapter"):
        CoalitionDecoder(model, tokenizer, ["clean", "nobody"])
    with pytest.raises(ValueError):
        CoalitionDecoder(model, tokenizer, OWNERS, "median")
    with pytest.raises(ValueError):
        CoalitionDecoder(model, tokenizer, OWNERS, "size")  # no sizes
    with pytest.raises(ValueError):
        CoalitionDecoder(model, tokenizer, OWNERS).generate(PROMPTS, [0, 0], GREEDY)  # a coalition is a set
    with pytest.raises(ValueError):
        CoalitionDecoder(model, tokenizer, OWNERS).generate(PROMPTS, [3], GREEDY)
    assert CoalitionDecoder(model, tokenizer, OWNERS).generate([], [0], GREEDY) == []


# --------------------------------------------------------------------------- exactness


def test_empty_coalition_decodes_exactly_like_the_base(base_model_dir, decoder):
    from common.model.base import load_base_model

    base, tokenizer = load_base_model(base_model_dir)
    result = decoder.decode(PROMPTS, [], GREEDY)
    assert result.components == ((BASE, 1.0),)
    assert result.token_ids == [_greedy_reference(base, tokenizer, p, GREEDY.max_new_tokens) for p in PROMPTS]
    assert result.texts == [tokenizer.decode(t, skip_special_tokens=True) for t in result.token_ids]
    assert all(tokenizer.eos_token_id not in t for t in result.token_ids)


@pytest.mark.parametrize("index", [0, 2])
def test_single_owner_decodes_exactly_like_its_own_model(base_model_dir, fast_spec, quick_adapters, decoder, index):
    name = OWNERS[index]
    alone, tokenizer = _peft(base_model_dir, fast_spec, {name: _tensors(quick_adapters, name)})
    expected = [_greedy_reference(alone, tokenizer, p, GREEDY.max_new_tokens) for p in PROMPTS]
    assert decoder.decode(PROMPTS, [index], GREEDY).token_ids == expected
    for rule in ("mean", "size"):  # every rule reads that owner alone, with weight 1
        other = CoalitionDecoder(decoder.model, decoder.tokenizer, OWNERS, rule, sizes=[3, 1, 2])
        assert other.components([index]) == ((name, 1.0),)


@pytest.mark.parametrize("rule", ["sum", "mean", "size"])
def test_composed_logprobs_equal_the_formula(decoder, rule):
    sizes = [3, 1, 2]
    members = [0, 2]
    w = {"sum": ([1.0, 1.0], -1.0), "mean": ([0.5, 0.5], 0.0), "size": ([3 / 5, 2 / 5], 0.0)}[rule]
    composed = CoalitionDecoder(decoder.model, decoder.tokenizer, OWNERS, rule, sizes)
    model, tokenizer = decoder.model, decoder.tokenizer
    so_far = [[15, 278], [], [267], [309, 327, 475], [28]]
    got = composed.next_token_logprobs(PROMPTS, members, so_far).double().numpy()

    def single(prompt, extra):  # one unpadded forward per model, adapters switched by hand
        ids = (tokenizer(prompt, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]) + extra
        x = torch.tensor([ids])
        with torch.inference_mode():
            with model.disable_adapter():
                rows = [model(input_ids=x).logits[0, -1]]
            for i in members:
                model.set_adapter(OWNERS[i])
                rows.append(model(input_ids=x).logits[0, -1])
        return [np.maximum(torch.log_softmax(r.double(), -1).numpy(), DEFAULT_FLOOR) for r in rows]

    for row, (prompt, extra) in enumerate(zip(PROMPTS, so_far)):
        base, *owners = single(prompt, extra)
        scores = w[1] * base + sum(wi * o for wi, o in zip(w[0], owners))
        expected = scores - np.logaddexp.reduce(scores)
        np.testing.assert_allclose(got[row], expected, atol=2e-4, rtol=0)
        assert np.isclose(np.exp(got[row]).sum(), 1.0, atol=1e-4)


# --------------------------------------------------------------------------- paths agree


@pytest.mark.parametrize("config", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_cache_path_equals_recompute_path_and_naive_loop(decoder, config):
    from dataclasses import replace

    members = [0, 1, 2]
    cached = decoder.decode(PROMPTS, members, config)
    recomputed = decoder.decode(PROMPTS, members, replace(config, use_cache=False))
    assert cached.token_ids == recomputed.token_ids
    assert generate_sequential_naive(decoder, PROMPTS, members, config) == cached.texts


def test_batching_does_not_change_generations(decoder):
    from dataclasses import replace

    members = [0, 1]
    batched = decoder.decode(PROMPTS, members, GREEDY).token_ids
    assert [decoder.decode([p], members, GREEDY).token_ids[0] for p in PROMPTS] == batched
    # With sampling, draws follow the prompt's index in the call, whatever the batch size.
    sampled = decoder.decode(PROMPTS, members, SAMPLED).token_ids
    assert decoder.decode(PROMPTS, members, replace(SAMPLED, batch_size=1)).token_ids == sampled
    assert decoder.decode(PROMPTS, members, replace(SAMPLED, batch_size=2)).token_ids == sampled


# --------------------------------------------------------------------------- randomness


def test_seed_determines_samples(decoder):
    from dataclasses import replace

    config = DecodingConfig(max_new_tokens=12, temperature=1.0, seed=0)
    first = decoder.generate(PROMPTS, [0, 2], config)
    assert decoder.generate(PROMPTS, [0, 2], config) == first
    assert decoder.generate(PROMPTS, [0, 2], replace(config, seed=1)) != first


def test_every_coalition_sees_the_same_random_numbers(decoder):
    draws = [decoder.decode(PROMPTS, m, SAMPLED).draws for m in ([], [0], [1, 2], [0, 1, 2])]
    expected = uniform_draws(SAMPLED.seed, range(len(PROMPTS)), SAMPLED.max_new_tokens)
    for d in draws:
        np.testing.assert_array_equal(d, expected)
    # A prompt's stream depends on (seed, index) only: longer decodes extend it.
    np.testing.assert_array_equal(uniform_draws(3, [1, 4], 20)[:, :10], expected[[1, 4]])
    assert decoder.decode(PROMPTS, [0], GREEDY).draws is None


def test_coalition_equal_to_the_base_samples_the_same_tokens(base_model_dir, fast_spec, quick_adapters):
    """An adapter with B = 0 is the base model: under common random numbers S = {it} and S = ∅
    must then sample the very same tokens."""
    zero = {k: (np.zeros_like(v) if "lora_B" in k else v) for k, v in _tensors(quick_adapters, "clean").items()}
    model, tokenizer = _peft(base_model_dir, fast_spec, {"zero": zero, "clean": _tensors(quick_adapters, "clean")})
    dec = CoalitionDecoder(model, tokenizer, ["zero", "clean"])
    config = DecodingConfig(max_new_tokens=12, temperature=1.5, seed=7)
    assert dec.decode(PROMPTS, [0], config).token_ids == dec.decode(PROMPTS, [], config).token_ids


def test_inverse_cdf_sampling_in_vocabulary_order():
    scores = torch.log(torch.tensor([[0.1, 0.5, 0.0, 0.4]] * 4, dtype=torch.float64))
    u = np.array([0.0, 0.15, 0.99, 0.5])
    # Full distribution: CDF 0.1, 0.6, 0.6, 1.0 in vocabulary order.
    assert select_tokens(scores, 1.0, 1.0, u).tolist() == [0, 1, 3, 1]
    # top_p = 0.8 keeps tokens 1 and 3 (0.5 + 0.4): CDF 0, .5, .5, .9 (u is scaled by the kept mass).
    assert select_tokens(scores, 1.0, 0.8, u).tolist() == [1, 1, 3, 1]
    assert select_tokens(scores, 0.0, 1.0, None).tolist() == [1, 1, 1, 1]


# --------------------------------------------------------------------------- adapter directories


def test_saved_adapter_directories_load_back(base_model_dir, fast_spec, quick_adapters, decoder, tmp_path):
    dirs = {}
    for name in ("clean", "flipped"):
        dirs[name] = save_adapter_dir(str(base_model_dir), fast_spec, name, _tensors(quick_adapters, name),
                                      tmp_path / name)
        assert (dirs[name] / "adapter_config.json").is_file()
        assert not (dirs[name] / name).exists()
    model, tokenizer = load_adapter_dirs(str(base_model_dir), {n: str(p) for n, p in dirs.items()})
    reloaded = CoalitionDecoder(model, tokenizer, ["clean", "flipped"])
    assert reloaded.decode(PROMPTS, [0, 1], GREEDY).token_ids == decoder.decode(PROMPTS, [0, 2], GREEDY).token_ids


@pytest.mark.parametrize("rule", ["sum", "mean", "size"])
def test_the_decoder_and_the_scorer_compose_with_one_formula(rule):
    """Issue 13: ``compose_next_token`` (torch) and ``compose_logprobs`` (numpy) computed the same
    formula separately; both now read ``coalition_terms``. On random logits they agree."""
    import itertools

    import torch

    from common.valuation.composition import BASE_TERM, coalition_terms, compose_logprobs
    from server.valuation.decoding import compose_next_token

    rng = np.random.default_rng(5)
    n, batch, vocab = 3, 4, 11
    logits = rng.standard_normal((n + 1, batch, vocab)) * 3
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    sizes = [3.0, 1.0, 5.0] if rule == "size" else None
    for k in range(n + 1):
        for members in itertools.combinations(range(n), k):
            terms = coalition_terms(members, n, rule, sizes)
            blocks = torch.tensor(np.stack([logits[0 if c == BASE_TERM else c + 1] for c, _ in terms]))
            torch_scores = compose_next_token(blocks, [w for _, w in terms]).double().numpy()
            numpy_scores = compose_logprobs(logp[0], logp[1:], members, rule, sizes)
            assert np.allclose(torch_scores, numpy_scores, atol=1e-4), (members, rule)
