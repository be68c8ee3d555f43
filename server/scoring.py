"""Scoring the held-out set: n+1 passes of sequence log-probs, then arithmetic only.

Every response is scored once under π₀ (adapters disabled) and once per owner adapter; the
per-owner reward margins form an ``n × P`` matrix from which any coalition's utility is
computed without touching the model again (method.md §3). Tokenisation mirrors TRL's DPO
trainer — prompt, then prompt+response+EOS, split where they diverge — so that the margins the
coordinator measures are of the same sequences the owners trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common.data import PreferenceExample
from common.lora import lora_config
from common.spec import TrainingSpec
from common.utility import preference_margins

BASE = "__base__"


def split_sequence(tokenizer, prompt: str, response: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt+response+EOS and where the response starts (TRL's convention)."""
    eos = tokenizer.eos_token or ""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_text = prompt + response if response.endswith(eos) else prompt + response + eos
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    start = 0
    while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
        start += 1
    return full_ids[:max_length], min(start, max_length)


def load_adapters(base_model, spec: TrainingSpec, adapters: Mapping[str, Mapping[str, np.ndarray]]):
    """Wrap ``base_model`` in one ``PeftModel`` holding every owner's adapter by name."""
    import torch
    from peft import get_peft_model, set_peft_model_state_dict

    names = list(adapters)
    config = lora_config(spec, base_model)
    model = get_peft_model(base_model, config, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, config)
    for name in names:
        state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in adapters[name].items()}
        result = set_peft_model_state_dict(model, state, adapter_name=name)
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if unexpected:
            raise ValueError(f"adapter {name}: unexpected tensors {unexpected[:3]}")
    model.eval()
    return model


def sequence_logprobs(model, tokenizer, prompts: Sequence[str], responses: Sequence[str],
                      max_length: int, batch_size: int = 64) -> np.ndarray:
    """log π(response | prompt) summed over response tokens, one float per pair."""
    import torch

    sequences = [split_sequence(tokenizer, p, r, max_length) for p, r in zip(prompts, responses, strict=True)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.empty(len(sequences), dtype=np.float64)
    with torch.no_grad():
        for lo in range(0, len(sequences), batch_size):
            chunk = sequences[lo : lo + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            scored = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, (seq, start) in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
                scored[row, max(start, 1) : len(seq)] = True
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None]).squeeze(2)
            out[lo : lo + len(chunk)] = (logp * scored[:, 1:]).sum(1).double().numpy()
    return out


@dataclass(frozen=True)
class ScoredEvaluation:
    """Log-probs of every held-out response under π₀ and each owner, and the margin matrix."""

    owners: tuple[str, ...]
    base_chosen: np.ndarray
    base_rejected: np.ndarray
    owner_chosen: np.ndarray
    owner_rejected: np.ndarray

    @property
    def margins(self) -> np.ndarray:
        return preference_margins(self.base_chosen, self.base_rejected, self.owner_chosen, self.owner_rejected)


def score_evaluation(
    peft_model,
    tokenizer,
    owners: Sequence[str],
    examples: Sequence[PreferenceExample],
    max_length: int,
    progress: Callable[[str], None] = lambda _msg: None,
) -> ScoredEvaluation:
    """The n+1 scoring passes over the held-out pairs."""
    prompts = [e.prompt for e in examples]
    chosen = [e.chosen for e in examples]
    rejected = [e.rejected for e in examples]

    def both() -> tuple[np.ndarray, np.ndarray]:
        return (sequence_logprobs(peft_model, tokenizer, prompts, chosen, max_length),
                sequence_logprobs(peft_model, tokenizer, prompts, rejected, max_length))

    progress("scoring held-out pairs under the base model")
    with peft_model.disable_adapter():
        base_c, base_r = both()
    owner_c, owner_r = [], []
    for i, name in enumerate(owners):
        progress(f"scoring held-out pairs under {name} ({i + 1}/{len(owners)})")
        peft_model.set_adapter(name)
        c, r = both()
        owner_c.append(c)
        owner_r.append(r)
    return ScoredEvaluation(tuple(owners), base_c, base_r, np.array(owner_c), np.array(owner_r))
