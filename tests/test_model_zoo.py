"""The model zoo: locally built random-init GPT-2 / Llama / Qwen2 / Mistral checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.embedded.model_zoo import (
    ARCHITECTURES,
    MANIFEST,
    ZooModelConfig,
    build_zoo_model,
    build_zoo_tokenizer,
    llama_25m_shaped,
    parameter_count,
    smollm_135m_shaped,
)

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "The quiet river helps the old teacher today.",
    "There are 42 books in 2024,\nand 7 of them are kind!",
    "  leading spaces, tabs\tand unicode: café ☕ ü",
    "<s> literal specials </s> and <zoo_filler_3> in text",
]
PREFERENCE = {
    "prompt": [{"role": "user", "content": "Why does the river help the garden?"}],
    "chosen": [{"role": "assistant", "content": "The river is kind and helps the garden often."}],
    "rejected": [{"role": "assistant", "content": "The river is rude."}],
}


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """One build per (architecture, chat template); each is reused by several tests."""
    root = tmp_path_factory.mktemp("zoo")
    return {
        (arch, chat): build_zoo_model(root / f"{arch}-{chat}", ZooModelConfig(architecture=arch, chat_template=chat))
        for arch in ARCHITECTURES
        for chat in (False, True)
    }


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_loads_as_its_architecture_and_runs(zoo, arch):
    model, tokenizer = _load(zoo[(arch, False)])
    assert model.config.model_type == arch
    assert model.dtype == torch.float32
    assert len(tokenizer) == model.config.vocab_size == ZooModelConfig().vocab_size
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<s>", "</s>", "<pad>", "<unk>")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(model.config, key) == getattr(model.generation_config, key) == getattr(tokenizer, key)
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied == (arch in ("gpt2", "qwen2"))

    ids = tokenizer(TEXTS[0], return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4 or out[0, -1] == tokenizer.eos_token_id


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_bos_behaviour(zoo, arch):
    _, tokenizer = _load(zoo[(arch, False)])
    with_specials = tokenizer("hi there")["input_ids"]
    without = tokenizer("hi there", add_special_tokens=False)["input_ids"]
    if arch in ("llama", "mistral"):
        assert with_specials[0] == tokenizer.bos_token_id
        assert with_specials[1:] == without
    else:
        assert with_specials == without
    assert tokenizer.bos_token_id not in without
    assert tokenizer.decode(without) == "hi there"


@pytest.mark.parametrize("arch,add_bos", [("gpt2", True), ("qwen2", True), ("llama", False)])
def test_bos_override(tmp_path, arch, add_bos):
    _, tokenizer = _load(build_zoo_model(tmp_path / "m", ZooModelConfig(architecture=arch, add_bos=add_bos)))
    assert (tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id) == add_bos


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("chat", [False, True])
def test_saved_tokenizer_encodes_like_the_built_one(zoo, arch, chat):
    """What AutoTokenizer loads (Qwen2Tokenizer for qwen2) tokenises exactly like the builder's."""
    _, loaded = _load(zoo[(arch, chat)])
    built = build_zoo_tokenizer(ZooModelConfig(architecture=arch, chat_template=chat))
    for text in TEXTS:
        for specials in (True, False):
            assert loaded(text, add_special_tokens=specials)["input_ids"] == \
                built(text, add_special_tokens=specials)["input_ids"]
        assert loaded.decode(loaded(text, add_special_tokens=False)["input_ids"]) == text


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_chat_template(zoo, arch):
    from trl.data_utils import apply_chat_template

    _, tokenizer = _load(zoo[(arch, True)])
    assert tokenizer.eos_token == "<|im_end|>"
    bos = "<s>" if arch in ("llama", "mistral") else ""
    encoded = tokenizer.apply_chat_template(PREFERENCE["prompt"], tokenize=True, return_dict=True,
                                            add_generation_prompt=True)
    text = tokenizer.decode(encoded["input_ids"])
    assert text == bos + "<|im_start|>user\nWhy does the river help the garden?<|im_end|>\n<|im_start|>assistant\n"
    assert encoded["input_ids"].count(tokenizer.bos_token_id) == (1 if bos else 0)

    prompt = tokenizer.apply_chat_template(PREFERENCE["prompt"], tokenize=False, add_generation_prompt=True)
    for key in ("chosen", "rejected"):
        full = tokenizer.apply_chat_template(PREFERENCE["prompt"] + PREFERENCE[key], tokenize=False)
        assert full.startswith(prompt)
        assert full[len(prompt):] == PREFERENCE[key][0]["content"] + "<|im_end|>\n"
        ids_prompt = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids_full = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert ids_full[: len(ids_prompt)] == ids_prompt

    rendered = apply_chat_template(PREFERENCE, tokenizer)
    assert rendered["prompt"] == prompt
    assert rendered["chosen"] == PREFERENCE["chosen"][0]["content"] + "<|im_end|>\n"
    assert rendered["rejected"] == PREFERENCE["rejected"][0]["content"] + "<|im_end|>\n"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_wraps_with_default_targets(zoo, arch):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = _load(zoo[(arch, False)])
    lora = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, fan_in_fan_out=arch == "gpt2")
    peft_model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in peft_model.parameters()) // 10
    ids = tokenizer(TEXTS[0], return_tensors="pt")
    loss = peft_model(**ids, labels=ids["input_ids"]).loss
    loss.backward()
    assert all(p.grad is not None for p in peft_model.parameters() if p.requires_grad)


def test_deterministic(tmp_path):
    config = ZooModelConfig(architecture="llama", chat_template=True)
    a = build_zoo_model(tmp_path / "a", config)
    b = build_zoo_model(tmp_path / "b", config)
    # A fresh process has other hash seeds (Python's and Rust's): BPE training must not care.
    c = tmp_path / "c"
    subprocess.run(
        [sys.executable, "-c", "import sys; from common.embedded.model_zoo import ZooModelConfig, build_zoo_model; "
         "build_zoo_model(sys.argv[1], ZooModelConfig(architecture='llama', chat_template=True))", str(c)],
        check=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) == sorted(p.name for p in c.iterdir())
    for other in (b, c):
        for name in names:
            assert (a / name).read_bytes() == (other / name).read_bytes(), name
    sa, sb = _state(_load(a)[0]), _state(_load(b)[0])
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # another seed gives other weights
    d = build_zoo_model(tmp_path / "d", ZooModelConfig(architecture="llama", chat_template=True, seed=1))
    sd = _state(_load(d)[0])
    assert not torch.equal(sa["model.layers.0.self_attn.q_proj.weight"], sd["model.layers.0.self_attn.q_proj.weight"])


def test_build_leaves_the_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_zoo_model(tmp_path / "m", ZooModelConfig(architecture="gpt2"))
    assert torch.equal(torch.rand(3), expected)


def test_custom_corpus_and_rebuild(tmp_path):
    corpus = ["zebra quokka axolotl"] * 50 + ["the quokka smiles"] * 20
    path = build_zoo_model(tmp_path / "m", ZooModelConfig(architecture="mistral", vocab_size=300), corpus=corpus)
    _, tokenizer = _load(path)
    assert len(tokenizer(" quokka", add_special_tokens=False)["input_ids"]) == 1
    assert json.loads((path / MANIFEST).read_text())["corpus"] == "custom"
    # a zoo directory may be rebuilt in place (stale files go), a foreign one may not
    build_zoo_model(path, ZooModelConfig(architecture="gpt2", chat_template=True))
    build_zoo_model(path, ZooModelConfig(architecture="gpt2"))
    assert not (path / "chat_template.jinja").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "weights.bin").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        build_zoo_model(foreign)


@pytest.mark.parametrize("bad", [
    dict(architecture="gptj"), dict(hidden_size=66), dict(num_kv_heads=3), dict(vocab_size=200),
])
def test_invalid_configs(tmp_path, bad):
    with pytest.raises(ValueError):
        build_zoo_model(tmp_path / "m", ZooModelConfig(**bad))


def test_llama_25m_shape(tmp_path):
    config = llama_25m_shaped()
    assert config.architecture == "llama"
    count = parameter_count(config)
    assert 25e6 <= count <= 30e6
    model, tokenizer = _load(build_zoo_model(tmp_path / "m", config))  # about half a second
    assert sum(p.numel() for p in model.parameters()) == count
    assert len(tokenizer) == model.config.vocab_size == 8192
    ids = tokenizer(TEXTS[0], return_tensors="pt")
    with torch.no_grad():
        assert model(**ids).logits.shape == (1, ids["input_ids"].shape[1], 8192)


def test_smollm_135m_shape():
    config = smollm_135m_shaped()
    assert (config.architecture, config.hidden_size, config.num_layers, config.num_heads, config.num_kv_heads,
            config.intermediate_size, config.vocab_size, config.max_positions) == (
        "llama", 576, 30, 9, 3, 1536, 49152, 2048)
    count = parameter_count(config)
    assert 134e6 <= count <= 136e6
    # the analytic count: tied embedding, 30 × (attention + MLP + 2 norms), final norm
    h, kv, i = 576, 3 * 64, 1536
    layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    assert count == 49152 * h + 30 * layer + h
    assert smollm_135m_shaped(num_layers=2).num_layers == 2


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_big_vocab_is_padded_with_unreachable_fillers(tmp_path, arch):
    """BPE on the small corpus stops below 1024; filler entries fill the rest, never emitted."""
    path = build_zoo_model(tmp_path / "m", ZooModelConfig(architecture=arch, vocab_size=1024))
    model, tokenizer = _load(path)
    assert len(tokenizer) == model.config.vocab_size == 1024
    vocab = tokenizer.get_vocab()
    fillers = sorted(i for token, i in vocab.items() if token.startswith("<zoo_filler_"))
    assert fillers and fillers == list(range(1024 - len(fillers), 1024))
    ids = {i for text in TEXTS for i in tokenizer(text)["input_ids"]}
    assert not ids & set(fillers)
    assert tokenizer.decode([vocab["<zoo_filler_0>"]]) == "<zoo_filler_0>"
    assert len(build_zoo_tokenizer(llama_25m_shaped())) == 8192
