"""Scoring the held-out set: n+1 passes of sequence log-probs, then arithmetic only.

Every response is scored once under π₀ (adapters disabled) and once per owner adapter; the
per-owner reward margins form an ``n × P`` matrix from which any coalition's utility is
computed without touching the model again (method.md §3). Tokenisation is the owners' own
(:mod:`common.model.tokenization`), so the margins are of the same sequences the owners trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from common.config.spec import TrainingSpec
from common.data import PreferenceExample
from common.model.tokenization import tokenize_pair
from common.valuation.utility import coalition_utilities, preference_margins

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


class ModelScorer:
    """The preference utilities of one standalone model (a *really retrained* coalition model),
    computed exactly as the game computes an arithmetic coalition's.

    The held-out pairs are tokenised once (:func:`pair_sequences`); each model is scored like an
    owner in :func:`score_evaluation`, and its utility is the game's utility of the one-member
    coalition (:func:`~common.valuation.utility.coalition_utilities`), so a retrained model and an
    arithmetic coalition are measured by the same code (the fidelity study and the audit).
    """

    def __init__(self, spec: TrainingSpec, evaluation: Sequence[PreferenceExample], hardware=None,
                 base=None) -> None:
        from common.model.base import load_spec_model

        self.spec = spec
        model, tokenizer = base or load_spec_model(spec, hardware)
        self.sequences = pair_sequences(tokenizer, list(evaluation), spec.max_length, spec.max_prompt_length)
        self.pad = pad_id_of(tokenizer)
        self.base = self._logprobs(model)

    def _logprobs(self, model) -> tuple[np.ndarray, np.ndarray]:
        chosen, rejected = self.sequences
        return sequence_logprobs(model, chosen, self.pad), sequence_logprobs(model, rejected, self.pad)

    def utilities_of(self, model, metrics: Sequence[str]) -> dict[str, float]:
        """Each of ``metrics`` (``accuracy``, ``logsigmoid``) of ``model``'s margins over π₀."""
        chosen, rejected = self._logprobs(model)
        scored = ScoredEvaluation(("model",), self.base[0], self.base[1], chosen[None, :], rejected[None, :])
        alone = np.array([1], dtype=np.int64)
        return {metric: float(coalition_utilities(scored.margins, alone, metric, beta=self.spec.beta)[0])
                for metric in metrics}
