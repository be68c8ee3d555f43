"""Owner-side DPO fine-tuning of one LoRA adapter with TRL, independent of Flower.

The reference model must be π₀ itself so adapters compose by arithmetic: we hand TRL the
*plain* base model plus a ``peft_config``; TRL then uses the base with adapters disabled as
reference (passing an already wrapped ``PeftModel`` would freeze a copy of that adapter as the
reference instead — stack notes). CPU-hostile TRL defaults (bf16, gradient checkpointing,
lr 1e-6) are overridden from the spec.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from common.basemodel import load_base_model, model_fingerprint
from common.data import PreferenceExample
from common.digest import tensors_sha256
from common.errors import FairPoolError
from common.lora import adapter_tensors, lora_config
from common.spec import TrainingSpec


@dataclass
class AdapterResult:
    """What an owner sends back: adapter tensors and statistics, never its examples."""

    tensors: dict[str, np.ndarray]
    num_examples: int
    dropped: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return tensors_sha256(self.tensors)


@dataclass(frozen=True)
class LengthCheck:
    """How ``max_length`` treats an owner's examples, counted before TRL acts on it silently.

    ``prompt_too_long``: the prompt alone fills ``max_length``, TRL would drop the example (no
    response token would survive truncation), so we drop it and report it as dropped.
    ``truncated``: kept, but prompt+chosen or prompt+rejected (+EOS) is longer than
    ``max_length``, so TRL trains on its first ``max_length`` tokens only (``keep_start``).
    """

    kept: list[PreferenceExample]
    prompt_too_long: int
    truncated: int


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _with_eos(response: str, eos: str) -> str:
    return response if eos and response.endswith(eos) else response + eos


def check_lengths(examples: Sequence[PreferenceExample], tokenizer, max_length: int) -> LengthCheck:
    """Split ``examples`` by what ``max_length`` does to them (see :class:`LengthCheck`).

    TRL drops prompt-filled examples and truncates long ones without a word; counting them
    here is what lets the owner's reply say how much of its data really trained. The lengths
    mirror TRL's non-conversational tokenisation: plain ``tokenizer(text)`` (special tokens
    included), EOS appended to each response unless present, and the completion starting
    where the prompt's and prompt+response's token ids diverge.
    """
    if not examples:
        return LengthCheck([], 0, 0)
    eos = tokenizer.eos_token or ""
    prompts = tokenizer([e.prompt for e in examples])["input_ids"]
    chosen = tokenizer([e.prompt + _with_eos(e.chosen, eos) for e in examples])["input_ids"]
    rejected = tokenizer([e.prompt + _with_eos(e.rejected, eos) for e in examples])["input_ids"]
    kept, too_long, truncated = [], 0, 0
    for example, prompt, full_c, full_r in zip(examples, prompts, chosen, rejected, strict=True):
        if min(_common_prefix(prompt, full_c), _common_prefix(prompt, full_r)) >= max_length:
            too_long += 1
            continue
        truncated += int(max(len(full_c), len(full_r)) > max_length)
        kept.append(example)
    return LengthCheck(kept, too_long, truncated)


def make_dpo_trainer(spec: TrainingSpec, model, tokenizer, examples: Sequence[PreferenceExample], output_dir: str):
    """TRL's DPOTrainer for ``spec``: plain base model + ``peft_config`` ⇒ reference = π₀.

    TRL then keeps no reference model (``ref_model is None``) and no "ref" adapter: it
    computes reference log-probs with the adapter disabled, i.e. under π₀ exactly.
    """
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,  # TRL defaults to on: slower, and pointless on CPU
        learning_rate=spec.learning_rate,
        num_train_epochs=spec.epochs,
        per_device_train_batch_size=spec.batch_size,
        beta=spec.beta,
        max_length=spec.max_length,
        lr_scheduler_type="linear",
        warmup_steps=0,
        seed=spec.seed,
        data_seed=spec.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([asdict(e) for e in examples]),
        processing_class=tokenizer,
        peft_config=lora_config(spec, model),
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
    return trainer


def prepare_training() -> None:
    """Quiet the libraries' per-step logging and progress bars (owners report their own)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    logging.getLogger("trl").setLevel(logging.ERROR)


def fit_lora(spec: TrainingSpec, model, tokenizer, examples: Sequence[PreferenceExample],
             progress: Callable[[str], None] = lambda _msg: None):
    """DPO-train a fresh LoRA adapter on ``model``, whose own weights are the reference.

    Returns ``(trainer, metrics, kept, dropped)``; ``trainer.model`` is the PeftModel.
    """
    import torch

    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    lengths = check_lengths(examples, tokenizer, spec.max_length)
    kept = lengths.kept
    dropped = {"prompt_too_long": lengths.prompt_too_long} if lengths.prompt_too_long else {}
    if not kept:
        raise FairPoolError(
            f"no usable examples: all {len(examples)} dropped (prompt_too_long: the prompt alone "
            f"fills max_length={spec.max_length} tokens)"
        )
    with tempfile.TemporaryDirectory(prefix="fairpool-dpo-") as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TRL calls deprecated transformers helpers
        trainer = make_dpo_trainer(spec, model, tokenizer, kept, scratch)
        progress(f"training on {len(kept)} examples")
        output = trainer.train()
        history = [h for h in trainer.state.log_history if "loss" in h]
    metrics = {"train_loss": float(output.training_loss), "train_seconds": time.perf_counter() - started,
               "steps": float(trainer.state.global_step),
               # kept but cut to max_length by TRL: counted so the report shows it (LengthCheck)
               "truncated_examples": float(lengths.truncated)}
    if history:
        last = history[-1]
        for key in ("rewards/accuracies", "rewards/margins", "loss"):
            if key in last:
                metrics["final_" + key.replace("/", "_")] = float(last[key])
    return trainer, metrics, kept, dropped


def train_adapter(
    spec: TrainingSpec,
    examples: Sequence[PreferenceExample],
    *,
    progress: Callable[[str], None] = lambda _msg: None,
) -> AdapterResult:
    """Fine-tune a LoRA adapter with DPO on ``examples``; reference = π₀ (adapters disabled)."""
    prepare_training()
    model, tokenizer = load_base_model(spec.base_model)
    if spec.base_fingerprint and model_fingerprint(model) != spec.base_fingerprint:
        raise FairPoolError(
            f"base model at {spec.base_model} does not match the coordinator's fingerprint "
            f"{spec.base_fingerprint[:12]}…: every owner must train on the same π₀"
        )
    trainer, metrics, kept, dropped = fit_lora(spec, model, tokenizer, examples, progress)
    return AdapterResult(adapter_tensors(trainer.model), len(kept), dropped, metrics)
