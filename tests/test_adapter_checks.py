"""Pure checks on adapters (validation, near-duplicates) and their sealing at rest."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ConfigError
from common.trust.adapter_checks import AdapterLimits, adapter_norm, adapter_problem, near_duplicates
from common.trust.sealing import (
    SealError,
    generate_storage_key,
    load_storage_key,
    seal,
    tensors_from_bytes,
    tensors_to_bytes,
    unseal,
)

EXPECTED = {"m.0.lora_A.weight": (4, 6), "m.0.lora_B.weight": (10, 4)}


def _adapter(seed: int = 0, scale: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in EXPECTED.items()}


def test_a_sound_adapter_passes():
    assert adapter_problem(_adapter(), EXPECTED, rank=4) is None


@pytest.mark.parametrize("change, expected", [
    (lambda t: {**t, "extra.weight": np.zeros(2, np.float32)}, "names do not match"),
    (lambda t: {k: v for k, v in t.items() if "lora_B" not in k}, "names do not match"),
    (lambda t: {**t, "m.0.lora_A.weight": t["m.0.lora_A.weight"].astype(np.float64)}, "dtype float64"),
    (lambda t: {**t, "m.0.lora_A.weight": np.zeros((2, 6), np.float32)}, "LoRA rank 2, the spec asks for rank 4"),
    (lambda t: {**t, "m.0.lora_B.weight": np.zeros((10, 8), np.float32)}, "LoRA rank 8"),
    (lambda t: {**t, "m.0.lora_A.weight": np.zeros((4, 7), np.float32)}, "shape (4, 7), expected (4, 6)"),
    (lambda t: {**t, "m.0.lora_A.weight": np.full((4, 6), np.inf, np.float32)}, "non-finite"),
    (lambda t: {k: v * 1e5 for k, v in t.items()}, "norm"),
    (lambda t: {}, "no adapter tensors"),
])
def test_each_defect_has_its_reason(change, expected):
    assert expected in adapter_problem(change(_adapter()), EXPECTED, rank=4)


def test_size_limit():
    limits = AdapterLimits(max_megabytes=1e-6)
    assert "above the" in adapter_problem(_adapter(), EXPECTED, 4, limits)


def test_limits_are_checked():
    with pytest.raises(ValueError):
        AdapterLimits(max_norm=0)
    with pytest.raises(ValueError):
        AdapterLimits(duplicate_cosine=1.5)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 10.0))
def test_scaled_copies_are_flagged_and_independent_adapters_are_not(seed, factor):
    a = _adapter(seed)
    b = {k: v * np.float32(factor) for k, v in a.items()}  # same direction: cosine 1
    c = _adapter(seed + 1)
    flagged = near_duplicates({"a": a, "b": b, "c": c}, 0.99)
    assert [f["owners"] for f in flagged] == [["a", "b"]]
    assert flagged[0]["cosine"] == pytest.approx(1.0, abs=1e-6)


def test_norm_is_the_l2_norm_of_everything():
    t = {"x": np.array([3.0], np.float32), "y": np.array([4.0], np.float32)}
    assert adapter_norm(t) == pytest.approx(5.0)


def test_sealing_round_trip_and_wrong_key_or_context(tmp_path):
    key = load_storage_key(generate_storage_key(tmp_path / "k"))
    assert oct(os.stat(tmp_path / "k").st_mode & 0o777) == "0o600"
    tensors = _adapter(3)
    blob = seal(key, tensors_to_bytes(tensors), "run/a")
    back = tensors_from_bytes(unseal(key, blob, "run/a"))
    assert all(np.array_equal(back[k], tensors[k]) for k in tensors)
    other = load_storage_key(generate_storage_key(tmp_path / "k2"))
    with pytest.raises(SealError, match="wrong storage key"):
        unseal(other, blob, "run/a")
    with pytest.raises(SealError):
        unseal(key, blob, "run/b")  # a blob moved to another owner's row does not open
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(SealError):
        unseal(key, bytes(flipped), "run/a")


def test_storage_key_files_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_storage_key(tmp_path / "missing")
    (tmp_path / "bad").write_text("not base64 !!")
    with pytest.raises(ConfigError, match="not a storage key"):
        load_storage_key(tmp_path / "bad")
    generate_storage_key(tmp_path / "k")
    with pytest.raises(ConfigError, match="refusing to replace"):
        generate_storage_key(tmp_path / "k")
