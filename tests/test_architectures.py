"""Any Hugging Face causal LM: train → admit → score → compose → decode on four real architectures.

Tiny random-init GPT-2, Llama (BOS-adding tokenizer), Qwen2 (chat template, conversational
data) and Mistral models are built locally (:mod:`common.embedded.model_zoo`) and go through exactly the
code the federation runs: TRL DPO training of a LoRA adapter with PEFT's default targets for the
architecture, the coordinator's admission checks, n+1 scoring, arithmetic coalition utilities
and composed decoding.
"""

from __future__ import annotations

import numpy as np
import pytest

from common.data import Message, PreferenceExample

ARCHITECTURES = ("gpt2", "llama", "qwen2", "mistral")
EXPECTED_TARGETS = {"gpt2": "c_attn", "llama": "q_proj", "qwen2": "q_proj", "mistral": "q_proj"}


def _pairs(conversational: bool, flip: bool, count: int = 12) -> list[PreferenceExample]:
    good, bad = " the river is quiet and clear.", " a loud mess of noise."
    out = []
    for i in range(count):
        prompt = f"Tell me about place {i}:"
        chosen, rejected = (bad, good) if flip else (good, bad)
        if conversational:
            out.append(PreferenceExample((Message("user", prompt),), (Message("assistant", chosen.strip()),),
                                         (Message("assistant", rejected.strip()),)))
        else:
            out.append(PreferenceExample(prompt, chosen, rejected))
    return out


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_architecture_goes_through_the_whole_pipeline(architecture, tmp_path):
    from client.trainer import train_adapter
    from common.config.hardware import Hardware
    from common.embedded.default_job import spec_for
    from common.embedded.model_zoo import ZooModelConfig, build_zoo_model
    from common.model.base import load_spec_model
    from common.model.lora import expected_adapter_shapes, load_adapters
    from common.trust.adapter_checks import AdapterLimits
    from common.valuation.utility import all_masks, coalition_utilities
    from server.valuation.decoding import CoalitionDecoder, DecodingConfig
    from server.valuation.pipeline import Submission, rejection_reason
    from server.valuation.scoring import score_evaluation

    chat = architecture == "qwen2"
    model_dir = build_zoo_model(tmp_path / architecture, ZooModelConfig(architecture=architecture,
                                                                         chat_template=chat))
    spec = spec_for(str(model_dir), epochs=2.0, max_length=48, batch_size=4, learning_rate=1e-2)
    cpu = Hardware(device="cpu")
    owners = {"good": _pairs(chat, flip=False), "bad": _pairs(chat, flip=True)}
    results = {name: train_adapter(spec, data, hardware=cpu) for name, data in owners.items()}

    base, tokenizer = load_spec_model(spec, cpu)
    expected = expected_adapter_shapes(spec, base)
    assert any(EXPECTED_TARGETS[architecture] in name for name in expected), "PEFT's default targets"
    for name, result in results.items():
        assert set(result.tensors) == set(expected)
        assert all(result.tensors[k].dtype == np.float32 for k in expected)
        assert result.num_examples == len(owners[name])
        submission = Submission(name, result.tensors, result.num_examples, result.sha256)
        assert rejection_reason(submission, expected, spec.lora_r, AdapterLimits()) is None

    names = list(results)
    peft = load_adapters(base, spec, {n: results[n].tensors for n in names})
    evaluation = _pairs(chat, flip=False, count=6)
    scored = score_evaluation(peft, tokenizer, names, evaluation, spec.max_length)
    assert scored.margins.shape == (2, len(evaluation))
    assert np.all(np.isfinite(scored.margins))
    # the owner whose data agrees with the held-out preferences moves them the right way
    assert scored.margins[0].mean() > 0 > scored.margins[1].mean()
    utilities = coalition_utilities(scored.margins, all_masks(2), "accuracy", "sum", [12, 12])
    assert utilities[0] == 0.5 and utilities[1] > utilities[2]

    decoder = CoalitionDecoder(peft, tokenizer, names)
    prompts = [e.prompt for e in evaluation[:2]]
    config = DecodingConfig(max_new_tokens=6)
    both = decoder.decode(prompts, [0, 1], config)
    assert [name for name, _ in both.components] == ["__base__", "good", "bad"]
    assert both.token_ids == decoder.decode(prompts, [0, 1], config).token_ids  # deterministic
    with peft.disable_adapter():
        import torch

        encoded = decoder.encode(prompts[:1])
        ids = torch.tensor(encoded)
        greedy = []
        for _ in range(3):
            next_id = int(peft(input_ids=ids).logits[0, -1].argmax())
            if next_id == tokenizer.eos_token_id:
                break
            greedy.append(next_id)
            ids = torch.cat([ids, torch.tensor([[next_id]])], dim=1)
    assert decoder.decode(prompts[:1], [], DecodingConfig(max_new_tokens=3)).token_ids[0] == greedy


def test_lora_target_modules_override_peft_defaults(tmp_path):
    from common.embedded.default_job import spec_for
    from common.embedded.model_zoo import ZooModelConfig, build_zoo_model
    from common.model.base import load_spec_model
    from common.model.lora import expected_adapter_shapes

    model_dir = build_zoo_model(tmp_path / "llama", ZooModelConfig(architecture="llama"))
    default = spec_for(str(model_dir))
    custom = spec_for(str(model_dir), target_modules="k_proj,o_proj,gate_proj")
    base, _ = load_spec_model(default)
    default_names = set(expected_adapter_shapes(default, base))
    custom_names = set(expected_adapter_shapes(custom, base))
    assert {n.split(".")[-3] for n in default_names} == {"q_proj", "v_proj"}  # PEFT's Llama default
    assert {n.split(".")[-3] for n in custom_names} == {"k_proj", "o_proj", "gate_proj"}
    assert default.digest() != custom.digest()
