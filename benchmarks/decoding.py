"""Benchmark of composed decoding (server/valuation/decoding.py): batched KV-cache path vs the naive loop.

One 4-owner coalition (``sum`` rule, so 5 models per step: π₀ and four adapters) decodes the
same 32 prompts greedily for 32 new tokens, once with :class:`CoalitionDecoder` (one
mixed-adapter forward per step over prompts × 5 rows, KV cache) and once with
:func:`generate_sequential_naive` (per step, five separate full-sequence forwards, no cache).
Both must produce the same texts. Speed does not depend on training, so the four adapters are
seeded random LoRA tensors of the right shapes on the embedded base model.

    .venv/bin/python benchmarks/decoding.py      # prints the figures as JSON
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

SPEEDUP_TARGET = 2.0
OWNERS = 4
PROMPTS = 32
NEW_TOKENS = 32
# One intra-op thread: on a machine shared with other work, torch's spinning OpenMP barriers
# make the many small ops of a tiny model erratically slow (seconds instead of 0.2 s per run).
TORCH_THREADS = 1


def best_of(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def random_adapters(spec, base_model, n: int, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """``n`` seeded random-but-nonzero adapters with the shapes ``spec`` gives on ``base_model``."""
    from common.model.lora import expected_adapter_shapes

    shapes = expected_adapter_shapes(spec, base_model)
    rng = np.random.default_rng(seed)
    adapters = {}
    for i in range(n):
        adapters[f"owner{i}"] = {k: (rng.normal(scale=1.0 / np.sqrt(max(s)), size=s)).astype(np.float32)
                                 for k, s in shapes.items()}
    return adapters


def bench_prompts(n: int) -> list[str]:
    from common.embedded.lexicon import PROMPT_TEMPLATES, SUBJECTS

    return [PROMPT_TEMPLATES[i % len(PROMPT_TEMPLATES)].format(s=SUBJECTS[i % len(SUBJECTS)]) for i in range(n)]


def measure() -> dict[str, dict]:
    """Figures as ``{name: {"value", "unit", ...}}`` ready for results.json."""
    from common.config.spec import TrainingSpec
    from common.embedded.base_model import build_base_model
    from common.model.base import load_base_model
    from common.model.lora import load_adapters
    from server.valuation.decoding import CoalitionDecoder, DecodingConfig

    base_dir = build_base_model()
    base, tokenizer = load_base_model(base_dir)
    spec = TrainingSpec(base_model=str(base_dir))
    adapters = random_adapters(spec, base, OWNERS)
    model = load_adapters(base, spec, adapters)
    decoder = CoalitionDecoder(model, tokenizer, list(adapters), "sum")
    prompts = bench_prompts(PROMPTS)
    members = list(range(OWNERS))
    config = DecodingConfig(max_new_tokens=NEW_TOKENS, batch_size=PROMPTS)

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        decoder.decode(prompts[:2], members, config)  # warm-up (lazy inits, allocator)
        fixed = _compare(decoder, prompts, members, config, stop_at_eos=False)
        natural = _compare(decoder, prompts, members, config, stop_at_eos=True)
        reward_s, reward_detail = _reward_games(decoder)
    finally:
        torch.set_num_threads(threads)
    speedup = fixed["sequential_s"] / fixed["batched_s"]
    return {
        "decode_batched_vs_sequential_s4": {
            "value": round(speedup, 2), "unit": "x",
            "target": {"min": SPEEDUP_TARGET}, "meets_target": speedup >= SPEEDUP_TARGET,
            **fixed,
            "prompts": PROMPTS, "max_new_tokens": NEW_TOKENS, "owners": OWNERS, "torch_threads": TORCH_THREADS,
            "stopping_at_eos": {**natural, "speedup": round(natural["sequential_s"] / natural["batched_s"], 2)},
            "note": (f"one {OWNERS}-owner coalition (sum rule: base + {OWNERS} adapters), {PROMPTS} prompts in one "
                     f"batch, greedy, {NEW_TOKENS} new tokens each (EOS ignored, so both paths do the full work): "
                     "mixed-adapter batched KV-cache decoder vs one full forward per model per step without "
                     "cache, same tokens; speedup = naive/batched time, best of 3 (batched) and 2 (naive). "
                     f"torch limited to {TORCH_THREADS} thread (see TORCH_THREADS). "
                     "stopping_at_eos: the same with EOS ending each response (random adapters stop early)"),
        },
        "reward_game_n4_s": {
            "value": round(reward_s, 2), "unit": "s", **reward_detail,
            "note": (f"exact valuation of {OWNERS} owners on 2 reward games (built-in helpful and harmless "
                     f"scorers): all 16 coalitions decoded once each and shared by both games, "
                     f"{REWARD_PROMPTS} prompts of the two-objective market, {NEW_TOKENS} new tokens, greedy "
                     "(EOS ends a response); random adapters, torch limited as above"),
        },
    }


REWARD_PROMPTS = 64


def _reward_games(decoder) -> tuple[float, dict]:
    """Wall time of valuing the decoder's owners exactly on the helpful and harmless games."""
    from common.embedded.objectives import (
        BUILTIN_SCORERS,
        QUESTION_TEMPLATES,
        REQUEST_TEMPLATES,
        eval_facts,
        eval_harms,
        question_prompt,
        request_prompt,
    )
    from common.valuation.estimators import estimate
    from server.valuation.decoding import DecodingConfig
    from server.valuation.generation_game import CoalitionGenerations, reward_game

    questions = [question_prompt(f, t) for f in eval_facts() for t in QUESTION_TEMPLATES]
    requests = [request_prompt(h, t) for h in eval_harms() for t in REQUEST_TEMPLATES]
    prompts = (questions + requests) * (REWARD_PROMPTS // len(questions + requests) + 1)
    prompts = prompts[:REWARD_PROMPTS]
    config = DecodingConfig(max_new_tokens=NEW_TOKENS, batch_size=REWARD_PROMPTS)
    start = time.perf_counter()
    generations = CoalitionGenerations(decoder, prompts, config, len(decoder.owners))
    results = {name: estimate(reward_game(decoder.owners, generations, name, scorer), "exact")
               for name, scorer in BUILTIN_SCORERS.items()}
    seconds = time.perf_counter() - start
    return seconds, {"games": sorted(results), "coalitions": 2 ** len(decoder.owners),
                     "prompts": REWARD_PROMPTS, "max_new_tokens": NEW_TOKENS}


def _compare(decoder, prompts, members, config, stop_at_eos: bool) -> dict:
    from server.valuation.decoding import generate_sequential_naive

    eos = decoder.eos_ids
    if not stop_at_eos:
        decoder.eos_ids = frozenset()  # decode exactly max_new_tokens per prompt
    try:
        batched_s, batched = best_of(lambda: decoder.decode(prompts, members, config))
        naive_s, naive_texts = best_of(lambda: generate_sequential_naive(decoder, prompts, members, config),
                                       repeats=2)
    finally:
        decoder.eos_ids = eos
    if naive_texts != batched.texts:
        raise AssertionError("the batched and naive decoders disagree; the timing would compare different work")
    # Tokens emitted per prompt: the continuation plus the EOS that ended it early, if any.
    tokens = sum(min(len(t) + 1, config.max_new_tokens) if stop_at_eos else len(t) for t in batched.token_ids)
    return {"batched_tokens_per_s": round(tokens / batched_s, 1), "sequential_tokens_per_s": round(tokens / naive_s, 1),
            "batched_s": round(batched_s, 3), "sequential_s": round(naive_s, 3), "tokens": tokens}

if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
