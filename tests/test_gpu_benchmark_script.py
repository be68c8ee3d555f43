"""benchmarks/gpu.py must not rot on machines without a GPU: its smoke mode runs the same code
(training, n+1 scoring, composed decoding on a SmolLM-shaped Llama, shrunk) on whatever device
is here. The real figures come only from a GPU (``make bench`` there)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_smoke_mode_measures_every_figure(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    figures = gpu.measure(tmp_path, smoke=True)
    assert set(figures) == {"gpu_model_build_s", "gpu_dpo_train_pairs_per_s", "gpu_scoring_pairs_per_s",
                            "gpu_decode_tokens_per_s", "gpu_peak_memory_mb"}
    for name in ("gpu_dpo_train_pairs_per_s", "gpu_scoring_pairs_per_s", "gpu_decode_tokens_per_s"):
        assert math.isfinite(figures[name]["value"]) and figures[name]["value"] > 0
    assert figures["gpu_scoring_pairs_per_s"]["pair_passes_per_s"] > figures["gpu_scoring_pairs_per_s"]["value"]
    if gpu.gpu_available() is not None:
        assert "no CUDA" in gpu.gpu_available()
