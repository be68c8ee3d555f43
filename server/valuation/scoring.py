"""Scoring the held-out set: n+1 passes of sequence log-probs, then arithmetic only.

Every response is scored once under π₀ (adapters disabled) and once per owner adapter; the
per-owner reward margins form an ``n × P`` matrix from which any coalition's utility is
computed without touching the model again (method.md §3). Tokenisation is the owners' own
(:mod:`common.model.tokenization`), so the margins are of the same sequences the owners trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common.config.spec import TrainingSpec
from common.data import PreferenceExample
from common.model.lora import lora_config
from common.model.tokenization import tokenize_pair
from common.valuation.utility import preference_margins

BASE = "__base__"


Sequence_ = tuple[list[int], int]
"""Token ids of prompt+response (cut to ``max_length``) and where the response starts."""


def pair_sequences(tokenizer, examples: Sequence[PreferenceExample], max_length: int,
                   max_prompt_length: int = 0) -> tuple[list[Sequence_], list[Sequence_]]:
    """The chosen and rejected sequences of every pair, tokenised as the owners trained on them.

    :func:`common.model.tokenization.tokenize_pair` is the trainer's own tokenisation, so the margins
    are measured on exactly the ids TRL's collator fed the owners (BOS, chat template, EOS,
    prompt limit and ``keep_start`` truncation included).
    """
    pairs = [tokenize_pair(tokenizer, e, max_prompt_length) for e in examples]
    return ([p.sequence("chosen", max_length) for p in pairs],
            [p.sequence("rejected", max_length) for p in pairs])


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


def sequence_logprobs(model, sequences: Sequence[Sequence_], pad_id: int, batch_size: int = 64) -> np.ndarray:
    """log π(response | prompt) summed over response tokens, one float per sequence.

    Runs on the model's own device and dtype; log-softmax is taken in float32.
    """
    import torch

    device = next(model.parameters()).device
    out = np.empty(len(sequences), dtype=np.float64)
    with torch.no_grad():
        for lo in range(0, len(sequences), batch_size):
            chunk = sequences[lo : lo + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            scored = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, (seq, start) in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
                scored[row, max(start, 1) : len(seq)] = True
            ids, mask, scored = ids.to(device), mask.to(device), scored.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None]).squeeze(2)
            out[lo : lo + len(chunk)] = (logp * scored[:, 1:]).sum(1).double().cpu().numpy()
    return out


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def pair_logprobs(model, tokenizer, examples: Sequence[PreferenceExample], max_length: int,
                  max_prompt_length: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sequence log-probs of every pair's chosen and rejected response under ``model``."""
    chosen, rejected = pair_sequences(tokenizer, examples, max_length, max_prompt_length)
    pad = pad_id_of(tokenizer)
    return sequence_logprobs(model, chosen, pad), sequence_logprobs(model, rejected, pad)


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
    *,
    max_prompt_length: int = 0,
) -> ScoredEvaluation:
    """The n+1 scoring passes over the held-out pairs (tokenised once, scored n+1 times)."""
    chosen, rejected = pair_sequences(tokenizer, examples, max_length, max_prompt_length)
    pad = pad_id_of(tokenizer)

    def both() -> tuple[np.ndarray, np.ndarray]:
        return sequence_logprobs(peft_model, chosen, pad), sequence_logprobs(peft_model, rejected, pad)

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
