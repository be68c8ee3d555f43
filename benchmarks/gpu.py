"""GPU benchmark on a SmolLM-135M-shaped Llama (random init, built locally): training, scoring, decoding.

Measures, on the first CUDA device, with FairPool's own code paths and the resolved ``auto``
hardware (bfloat16 where supported):

* ``gpu_dpo_train_pairs_per_s``: one owner's DPO LoRA training throughput (pairs/s) at
  ``max_length`` 512, on pairs whose prompt+response fill about 512 tokens;
* ``gpu_scoring_pairs_per_s``: the coordinator's n+1 scoring passes (n = 4 adapters), held-out
  pairs per second for all passes together (and pair-passes/s);
* ``gpu_decode_tokens_per_s``: composed decoding of a 4-owner coalition (5 models per step under
  ``sum``), new tokens per second over all prompts;
* ``gpu_peak_memory_mb``: peak GPU memory allocated by torch during each part.

Speed does not depend on what the adapters learnt, so scoring and decoding use seeded random
LoRA tensors. Without a GPU it prints why and writes nothing (``make bench`` goes on).

    .venv/bin/python benchmarks/gpu.py              # measure, print, merge into results.json
    .venv/bin/python benchmarks/gpu.py --no-write   # measure and print only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MAX_LENGTH = 512
TRAIN_PAIRS = 256
SCORE_PAIRS = 512
OWNERS = 4
DECODE_PROMPTS = 64
DECODE_TOKENS = 64


def gpu_available() -> str | None:
    """Why the benchmark cannot run here, or ``None`` when a CUDA device is present."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device on this machine"
    return None


def long_pairs(tokenizer, count: int, target_tokens: int, seed: int = 0):
    """Preference pairs of about ``target_tokens`` tokens each (prompt ≈ 3/4 of them)."""
    from common.data import PreferenceExample
    from common.embedded.model_zoo import default_corpus

    rng = np.random.default_rng(seed)
    lines = default_corpus(seed, 400)

    def text(tokens: int) -> str:
        out = ""
        while len(tokenizer(out, add_special_tokens=False)["input_ids"]) < tokens:
            out += " " + lines[int(rng.integers(len(lines)))]
        return out

    pairs = []
    for _ in range(count):
        prompt = text(int(target_tokens * 0.7))
        pairs.append(PreferenceExample(prompt, text(target_tokens // 4), text(target_tokens // 4)))
    return pairs


def random_adapters(spec, model, n: int, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    from common.model.lora import expected_adapter_shapes

    shapes = expected_adapter_shapes(spec, model)
    rng = np.random.default_rng(seed)
    return {f"owner{i}": {k: (rng.standard_normal(s) * 0.01).astype(np.float32) for k, s in shapes.items()}
            for i in range(n)}


class _Cuda:
    """CUDA timing and memory helpers that do nothing on a CPU (the ``--smoke`` run)."""

    def __init__(self, on_gpu: bool) -> None:
        import torch

        self.torch, self.on = torch, on_gpu

    def sync(self) -> None:
        if self.on:
            self.torch.cuda.synchronize()

    def reset(self) -> None:
        if self.on:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        return self.torch.cuda.max_memory_allocated() / 2**20 if self.on else float("nan")


def measure(work_dir: Path | None = None, *, smoke: bool = False) -> dict[str, dict]:
    """The figures; ``smoke`` runs a tiny model and few pairs on any device (checks the script only)."""
    import torch

    from client.trainer import train_adapter
    from common.config.hardware import Hardware
    from common.embedded.default_job import spec_for
    from common.embedded.model_zoo import build_zoo_model, smollm_135m_shaped
    from common.model.base import load_spec_model
    from common.model.lora import load_adapters
    from server.valuation.decoding import CoalitionDecoder, DecodingConfig
    from server.valuation.scoring import score_evaluation

    scratch = Path(work_dir or tempfile.mkdtemp(prefix="fairpool-gpu-bench-"))
    hardware = Hardware()
    resolved = hardware.resolve()
    cuda = _Cuda(resolved.device.startswith("cuda"))
    sizes = dict(train=16, score=16, prompts=4, tokens=4, length=64) if smoke else dict(
        train=TRAIN_PAIRS, score=SCORE_PAIRS, prompts=DECODE_PROMPTS, tokens=DECODE_TOKENS, length=MAX_LENGTH)
    shape = smollm_135m_shaped(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                               vocab_size=1024) if smoke else smollm_135m_shaped()
    started = time.perf_counter()
    model_dir = build_zoo_model(scratch / "smollm-135m-shaped", shape)
    build_s = time.perf_counter() - started
    spec = spec_for(str(model_dir), max_length=sizes["length"], epochs=1.0, batch_size=8, learning_rate=1e-4)
    _, tokenizer = load_spec_model(spec)
    train = long_pairs(tokenizer, sizes["train"], sizes["length"])
    held_out = long_pairs(tokenizer, sizes["score"], sizes["length"], seed=1)

    cuda.reset()
    result = train_adapter(spec, train, hardware=hardware)
    train_s = result.metrics["train_seconds"]
    train_peak = cuda.peak_mb()

    base, tokenizer = load_spec_model(spec, hardware)
    adapters = random_adapters(spec, base, OWNERS)
    peft = load_adapters(base, spec, adapters)
    cuda.reset()
    t0 = time.perf_counter()
    score_evaluation(peft, tokenizer, list(adapters), held_out, sizes["length"])
    cuda.sync()
    score_s = time.perf_counter() - t0
    score_peak = cuda.peak_mb()

    decoder = CoalitionDecoder(peft, tokenizer, list(adapters))
    prompts = [e.prompt for e in long_pairs(tokenizer, sizes["prompts"], sizes["length"] // 2, seed=2)]
    config = DecodingConfig(max_new_tokens=sizes["tokens"], batch_size=sizes["prompts"])
    decoder.decode(prompts[:4], list(range(OWNERS)), DecodingConfig(max_new_tokens=4))  # warm-up
    cuda.reset()
    t0 = time.perf_counter()
    out = decoder.decode(prompts, list(range(OWNERS)), config)
    cuda.sync()
    decode_s = time.perf_counter() - t0
    decode_peak = cuda.peak_mb()
    new_tokens = sum(len(t) for t in out.token_ids)
    TRAIN, SCORE, PROMPTS, TOKENS = sizes["train"], sizes["score"], sizes["prompts"], sizes["tokens"]

    device = torch.cuda.get_device_name(0) if cuda.on else resolved.device
    common = {"device": device, "dtype": resolved.dtype_name, "model": "SmolLM-135M-shaped Llama (random init)"}
    return {
        "gpu_model_build_s": {"value": round(build_s, 2), "unit": "s", **common},
        "gpu_dpo_train_pairs_per_s": {"value": round(TRAIN / train_s, 2), "unit": "pairs/s", **common,
                                      "note": f"{TRAIN} pairs, 1 epoch, batch 8, max_length {sizes['length']}, "
                                              f"{train_s:.1f} s"},
        "gpu_scoring_pairs_per_s": {"value": round(SCORE / score_s, 2), "unit": "pairs/s", **common,
                                    "pair_passes_per_s": round(SCORE * (OWNERS + 1) / score_s, 2),
                                    "note": f"{SCORE} held-out pairs × {OWNERS + 1} passes (π₀ + {OWNERS} "
                                            f"adapters), {score_s:.2f} s"},
        "gpu_decode_tokens_per_s": {"value": round(PROMPTS * TOKENS / decode_s, 1), "unit": "tokens/s",
                                    **common, "generated_tokens": new_tokens,
                                    "note": f"4-owner coalition (sum: 5 models per step), {PROMPTS} prompts × "
                                            f"{TOKENS} steps, {decode_s:.2f} s"},
        "gpu_peak_memory_mb": {"value": {"training": round(train_peak, 1), "scoring": round(score_peak, 1),
                                         "decoding": round(decode_peak, 1)}, "unit": "MiB", **common},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print the figures without updating results.json")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny model on any device, nothing written: checks the script runs")
    args = parser.parse_args()
    if args.smoke:
        print(json.dumps(measure(smoke=True), indent=2))
        return 0
    why = gpu_available()
    if why:
        print(f"GPU benchmark skipped: {why}")
        return 0
    figures = measure()
    print(json.dumps(figures, indent=2))
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from datetime import datetime, timezone

        from run import machine_info, merge_results

        merge_results(figures, {"machine": machine_info(), "measured_at": datetime.now(timezone.utc).isoformat(
            timespec="seconds"), "mode": "gpu"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
