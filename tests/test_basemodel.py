"""The embedded base model: deterministic, cached, rebuilt when corrupt; any HF dir loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def test_the_manifest_lists_every_file_and_a_changed_or_extra_file_invalidates_the_cache(small_build, tmp_path):
    """Validity is checked from file digests (no model load, no torch import: a resumed demo
    starts in about a second); any changed, missing or extra file means a rebuild."""
    from common.embedded.base_model import file_digests

    manifest = json.loads((small_build / MANIFEST).read_text())
    assert set(manifest["files"]) == {p.name for p in small_build.iterdir() if p.name != MANIFEST}
    assert manifest["files"] == file_digests(small_build)
    for damage in ("change", "remove", "add"):
        directory = shutil.copytree(small_build, tmp_path / damage)
        tokenizer = directory / "tokenizer.json"
        if damage == "change":
            tokenizer.write_text(tokenizer.read_text().replace("<|pad|>", "<|pbd|>"))
        elif damage == "remove":
            tokenizer.unlink()
        else:
            (directory / "extra.bin").write_bytes(b"\0")
        assert not cached_model_is_valid(directory), damage


def test_an_older_manifest_is_checked_by_loading_and_then_gains_the_file_list(small_build, tmp_path):
    directory = shutil.copytree(small_build, tmp_path / "old")
    manifest = json.loads((directory / MANIFEST).read_text())
    del manifest["files"]
    (directory / MANIFEST).write_text(json.dumps(manifest))
    assert cached_model_is_valid(directory)
    assert json.loads((directory / MANIFEST).read_text())["files"] == json.loads((small_build / MANIFEST).read_text())["files"]
    bad = shutil.copytree(small_build, tmp_path / "old-bad")
    (bad / MANIFEST).write_text(json.dumps({**manifest, "fingerprint": "0" * 64}))
    assert not cached_model_is_valid(bad) and "files" not in json.loads((bad / MANIFEST).read_text())


def test_checking_an_auto_or_cpu_device_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; from common.config.hardware import check_device_exists; "
            "check_device_exists('auto'); check_device_exists('cpu'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


def test_the_shipped_base_model_matches_its_fingerprint():
    """Issue 14 #5: the embedded π₀ ships with the package (the same model, hence the README's
    numbers, on every machine); its files match the manifest and its weights the fingerprint."""
    from common.embedded.base_model import (
        SHIPPED_DIR,
        TinyModelConfig,
        file_digests,
        model_fingerprint,
        shipped_model_dir,
    )
    from common.model.base import weights_fingerprint

    shipped = SHIPPED_DIR / TinyModelConfig().cache_key()
    assert shipped_model_dir() == shipped, "the default configuration's build ships"
    manifest = json.loads((shipped / MANIFEST).read_text())
    assert manifest["files"] == file_digests(shipped)
    model, _ = load_base_model(shipped)
    assert model_fingerprint(model) == manifest["fingerprint"]
    assert weights_fingerprint(shipped)  # the identity owners check
    assert shipped_model_dir(SMALL) is None, "other configurations are built"


def test_the_default_build_installs_the_shipped_copy_and_force_rebuilds(tmp_path, monkeypatch):
    from common.embedded import base_model as module

    said: list[str] = []
    target = module.build_base_model(directory=tmp_path / "home" / "m", progress=said.append)
    assert said == [f"base model: the shipped build, copied to {target}"]
    assert module.file_digests(target) == module.file_digests(module.shipped_model_dir())
    calls = []
    monkeypatch.setattr(module, "_build", lambda config, directory, progress: calls.append(directory) or directory)
    assert module.build_base_model(directory=target) == target and calls == [], "a valid cache is kept"
    module.build_base_model(directory=target, force=True)
    assert calls == [target], "--force trains it again from the corpus"
