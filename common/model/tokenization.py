"""The one tokenisation of preference pairs: what owners train on is what the coordinator scores.

The arithmetic is only as right as its token ids: a margin measured on ``[…]`` says nothing
about an adapter trained on ``[BOS, …]``. So a single function, :func:`tokenize_pair`, turns an
example into prompt / chosen / rejected ids, and it is used by the owner's DPO trainer (which
replaces TRL's own dataset preparation with it, :mod:`client.trainer`), by the coordinator's
scoring (:mod:`server.valuation.scoring`), by composed decoding (:func:`tokenize_prompt`,
:mod:`server.valuation.decoding`) and by the fidelity study.

It follows TRL's ``DPOTrainer`` processing step for step (``trl/trainer/dpo_trainer.py``,
``_prepare_dataset``), built from TRL's own helpers so it follows TRL when TRL changes (a test
compares it, list for list, with a stock ``DPOTrainer``'s dataset):

* conversational rows go through the tokenizer's chat template (TRL's ``_tokenize``; the
  prompt with the generation prompt), standard rows through plain ``tokenizer(text)`` — special
  tokens included, so a Llama-style tokenizer's BOS is there in training *and* scoring;
* standard responses get the EOS token appended unless they end with it;
* the completion starts where the prompt's ids and the prompt+response ids diverge
  (``common_prefix_length``), because tokens can merge across the boundary;
* ``max_prompt_length`` (FairPool's; TRL 1.x has none) keeps the prompt's *last* tokens, the
  part next to the response; ``max_length`` cuts prompt+response at the end (TRL's
  ``keep_start``), and a pair whose prompt alone reaches it is unusable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import ConfigError


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one preference pair, as TRL's DPO collator receives them."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]

    def sequence(self, which: str, max_length: int) -> tuple[list[int], int]:
        """``prompt + response`` cut to ``max_length`` (TRL's ``keep_start``) and where the response starts."""
        response = self.chosen_ids if which == "chosen" else self.rejected_ids
        ids = list(self.prompt_ids + response)[:max_length]
        return ids, min(len(self.prompt_ids), max_length)

    def prompt_fills(self, max_length: int) -> bool:
        """True when the prompt alone reaches ``max_length``: no response token would be trained."""
        return len(self.prompt_ids) >= max_length

    def truncated(self, max_length: int) -> bool:
        """True when prompt+chosen or prompt+rejected is longer than ``max_length``."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids)) > max_length

    def as_row(self) -> dict[str, list[int]]:
        return {"prompt_ids": list(self.prompt_ids), "chosen_ids": list(self.chosen_ids),
                "rejected_ids": list(self.rejected_ids)}


def _is_conversation(value) -> bool:
    return not isinstance(value, str)


def _trl_value(value):
    """A field as TRL takes it: a string, or a list of ``{"role", "content"}`` dicts."""
    from common.data import as_trl

    return as_trl(value)


def _encode(tokenizer, value, **chat_kwargs) -> list[int]:
    """TRL's own ``_tokenize``: chat template for a conversation, ``tokenizer(text)`` otherwise."""
    from trl.data_utils import _tokenize

    return list(_tokenize(tokenizer, value, **chat_kwargs)["input_ids"])


def _with_eos(text: str, eos: str | None) -> str:
    return text if not eos or text.endswith(eos) else text + eos


def tokenize_pair(tokenizer, example, max_prompt_length: int = 0) -> TokenizedPair:
    """Prompt, chosen and rejected ids of ``example`` exactly as TRL's DPOTrainer makes them.

    ``example`` is a :class:`common.data.PreferenceExample` with an explicit prompt (the loader
    extracts implicit prompts). A conversation needs the tokenizer's chat template
    (:func:`require_chat_template`).
    """
    from trl.data_utils import common_prefix_length

    prompt, chosen, rejected = (_trl_value(v) for v in (example.prompt, example.chosen, example.rejected))
    if _is_conversation(prompt):
        prompt_ids = _encode(tokenizer, prompt, add_generation_prompt=True)
        full_chosen = _encode(tokenizer, prompt + chosen)
        full_rejected = _encode(tokenizer, prompt + rejected)
    else:
        eos = tokenizer.eos_token
        prompt_ids = _encode(tokenizer, prompt)
        full_chosen = _encode(tokenizer, prompt + _with_eos(chosen, eos))
        full_rejected = _encode(tokenizer, prompt + _with_eos(rejected, eos))
    start = min(common_prefix_length(prompt_ids, full_chosen), common_prefix_length(prompt_ids, full_rejected))
    prompt_part = full_chosen[:start]
    if max_prompt_length and len(prompt_part) > max_prompt_length:
        prompt_part = prompt_part[-max_prompt_length:]
    return TokenizedPair(tuple(prompt_part), tuple(full_chosen[start:]), tuple(full_rejected[start:]))


def usable_pairs(tokenizer, examples: Sequence, max_length: int, max_prompt_length: int = 0, *,
                 where: str = "the evaluation set") -> tuple[list, int]:
    """``(examples whose prompt leaves room for a response, how many did not)``.

    A held-out pair whose prompt alone fills ``max_length`` has no response token to score: its
    margin would be 0 under every coalition, a tie that drags every accuracy towards ½. Such
    pairs are left out and counted; an evaluation set with none left is a ConfigError, since
    every value would be 0 and nothing paid, for a reason the report could not show.
    """
    kept = [e for e in examples
            if not tokenize_pair(tokenizer, e, max_prompt_length).prompt_fills(max_length)]
    if not kept:
        raise ConfigError(f"{where}: no usable pair: the prompt of every one of its {len(examples)} pairs fills "
                          f"the `max_length` of {max_length} tokens; raise `max_length` or set `max_prompt_length`")
    return kept, len(examples) - len(kept)


def tokenize_prompt(tokenizer, prompt, max_prompt_length: int = 0) -> list[int]:
    """Ids a coalition decodes from: the prompt as :func:`tokenize_pair` tokenises it alone.

    Standard prompts get the tokenizer's special tokens (a Llama BOS) as in training;
    conversations the chat template with the generation prompt.
    """
    value = _trl_value(prompt)
    ids = _encode(tokenizer, value, add_generation_prompt=True) if _is_conversation(value) else _encode(tokenizer, value)
    if max_prompt_length and len(ids) > max_prompt_length:
        ids = ids[-max_prompt_length:]
    return ids


def prompt_text(tokenizer, prompt) -> str:
    """A prompt as readable text (scorers and reports): a conversation rendered by the chat template."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(_trl_value(prompt), tokenize=False, add_generation_prompt=True)


def _conversational_item(item) -> bool:
    """An example (``PreferenceExample``) or a prompt (str or conversation) that needs a chat template."""
    return bool(item.conversational) if hasattr(item, "conversational") else not isinstance(item, str)


def apply_chat_template_setting(tokenizer, chat_template: str) -> None:
    """Install the spec's chat template (``--chat-template FILE``) on ``tokenizer``; "" keeps its own."""
    if chat_template:
        tokenizer.chat_template = chat_template


def require_chat_template(tokenizer, model_dir: str, examples: Sequence = ()) -> None:
    """Conversational data with a tokenizer that has no chat template: one clear error, and the fix."""
    if getattr(tokenizer, "chat_template", None):
        return
    if any(_conversational_item(e) for e in examples):
        raise ConfigError(
            f"base model {model_dir}: its tokenizer has no chat template, which conversational data needs; "
            "give one with `chat_template` (a Jinja template, e.g. the chat_template of the model "
            "family's tokenizer_config.json)")
