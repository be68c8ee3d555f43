"""The embedded base model: deterministic, cached, rebuilt when corrupt; any HF dir loads."""

from __future__ import annotations

import json
import shutil

import pytest

from common.embedded.base_model import (
    MANIFEST,
    TinyModelConfig,
    build_base_model,
    cached_model_is_valid,
    model_fingerprint,
)
from common.model.base import load_base_model

SMALL = TinyModelConfig(corpus_lines=300, epochs=1, vocab_size=400)


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    return build_base_model(SMALL, tmp_path_factory.mktemp("small") / "model")


def test_build_is_deterministic_and_cached(small_build, tmp_path):
    first = small_build
    second = build_base_model(SMALL, tmp_path / "b")
    fp_a = json.loads((first / MANIFEST).read_text())["fingerprint"]
    fp_b = json.loads((second / MANIFEST).read_text())["fingerprint"]
    assert fp_a == fp_b
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert build_base_model(SMALL, first) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp, "a valid cache must not be rebuilt"


def test_corrupt_cache_is_rebuilt(small_build, tmp_path):
    directory = shutil.copytree(small_build, tmp_path / "m")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    assert not cached_model_is_valid(directory)
    build_base_model(SMALL, directory)
    assert cached_model_is_valid(directory)


def test_missing_manifest_means_invalid(small_build, tmp_path):
    directory = shutil.copytree(small_build, tmp_path / "m")
    (directory / MANIFEST).unlink()
    assert not cached_model_is_valid(directory)


def test_embedded_model_loads_as_a_plain_hf_directory(base_model_dir):
    """The embedded model takes the same loading path as any user's local model directory."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_base_model(base_model_dir)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token is not None
    plain = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    assert model_fingerprint(plain) == model_fingerprint(model)
    assert model_fingerprint(model) == json.loads((base_model_dir / MANIFEST).read_text())["fingerprint"]


def test_missing_base_model_dir_is_a_clear_error(tmp_path):
    from common.errors import FairPoolError

    with pytest.raises(FairPoolError, match="no such directory"):
        load_base_model(tmp_path / "nope")
