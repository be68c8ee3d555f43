"""Mid-size figure on this CPU: a ~26 M-parameter Llama, 4 owners × 128 pairs, max_length 256.

Runs the real ``fairpool value`` (Flower's Simulation Engine, TRL DPO training, n+1 scoring,
exact Shapley) on a random-init Llama built locally (:func:`common.embedded.model_zoo.llama_25m_shaped`)
and synthetic preference pairs of up to 256 tokens, and records what a team trying FairPool on
a real-sized model would first ask: wall time per owner's training, the coordinator's scoring
time, the whole run's wall time and the peak memory summed over every process of the run.
Recorded, not gated (the values themselves are meaningless: the model is untrained).

    .venv/bin/python benchmarks/midsize.py           # prints the figures as JSON
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OWNERS = 4
PAIRS = 128
EVAL_PAIRS = 64
MAX_LENGTH = 256
SETTINGS = ["--max-length", str(MAX_LENGTH), "--epochs", "1", "--batch-size", "8", "--learning-rate", "1e-4"]


def write_data(directory: Path, tokenizer) -> tuple[dict[str, Path], Path]:
    """Four owners' and the evaluation set's JSONL files, pairs of about ``MAX_LENGTH`` tokens."""
    from gpu import long_pairs  # benchmarks/gpu.py: the same synthetic long pairs

    from common.data import save_preferences_jsonl

    directory.mkdir(parents=True, exist_ok=True)
    owners = {}
    for i in range(OWNERS):
        owners[f"owner{i}"] = directory / f"owner{i}.jsonl"
        save_preferences_jsonl(long_pairs(tokenizer, PAIRS, MAX_LENGTH, seed=i), owners[f"owner{i}"])
    held_out = directory / "eval.jsonl"
    save_preferences_jsonl(long_pairs(tokenizer, EVAL_PAIRS, MAX_LENGTH, seed=OWNERS), held_out)
    return owners, held_out


def measure(env: dict, scratch: Path, timeout_s: float) -> dict[str, dict]:
    import run  # benchmarks/run.py: process-tree sampling and the progress-event readers
    from transformers import AutoTokenizer

    from common.embedded.model_zoo import build_zoo_model, llama_25m_shaped, parameter_count

    config = llama_25m_shaped()
    model_dir = build_zoo_model(scratch / "llama-25m", config)
    owners, held_out = write_data(scratch / "midsize-data", AutoTokenizer.from_pretrained(model_dir))
    out = scratch / "midsize-run"
    cmd = [str(run.FAIRPOOL), "value", "--base-model", str(model_dir), "--eval", str(held_out), "--out", str(out),
           *[f"--owner={name}={path}" for name, path in owners.items()], *SETTINGS]
    result = run.run_process_tree(cmd, env, scratch / "midsize.out", scratch / "midsize.err", timeout_s)
    if result["returncode"] != 0:
        raise run.StepFailed(f"`fairpool value` on the mid-size model failed:\n{run._tail(scratch / 'midsize.err')}")
    stages = run.stage_times(run._events(out))
    shape = (f"Llama {parameter_count(config) / 1e6:.1f} M parameters (hidden {config.hidden_size}, "
             f"{config.num_layers} layers), {OWNERS} owners × {PAIRS} pairs, max_length {MAX_LENGTH}, 1 epoch, "
             f"batch 8, {EVAL_PAIRS} held-out pairs, 2 owners training at once (one CPU each)")
    return {
        "midsize_training_per_owner_s": run.figure(run.per_owner_training(out), "s", note=shape),
        "midsize_scoring_s": run.figure(stages["stage_scoring_s"], "s", note=f"{OWNERS + 1} passes over "
                                        f"{EVAL_PAIRS} held-out pairs on the coordinator"),
        "midsize_wall_s": run.figure(result["wall_s"], "s", note="the whole `fairpool value` run"),
        "midsize_peak_rss_mb": run.figure(result["peak_rss_mb"], "MiB", note="RSS summed over every process "
                                          "of the run (Flower, Ray, owners, coordinator), sampled"),
        **({"midsize_peak_pss_mb": run.figure(result["peak_pss_mb"], "MiB")} if result["peak_pss_mb"] else {}),
    }


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run

    with tempfile.TemporaryDirectory(prefix="fairpool-midsize-") as tmp:
        print(json.dumps(measure({**os.environ, **run.BASE_ENV}, Path(tmp), 3600.0), indent=2))
