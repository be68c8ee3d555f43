"""Owner-side DPO fine-tuning of one LoRA adapter with TRL, independent of Flower.

The reference model must be π₀ itself so adapters compose by arithmetic: we hand TRL the
*plain* base model plus a ``peft_config``; TRL then uses the base with adapters disabled as
reference (passing an already wrapped ``PeftModel`` would freeze a copy of that adapter as the
reference instead — stack notes). TRL's defaults (bf16, gradient checkpointing, lr 1e-6) are
replaced by the spec's settings and the resolved hardware (bf16 only where the device has it).
TRL's dataset preparation is replaced by :func:`common.model.tokenization.tokenize_pair`, the
tokenisation the coordinator scores with.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.config.hardware import Hardware, ResolvedHardware
from common.config.spec import TrainingSpec
from common.data import PreferenceExample
from common.errors import FairPoolError
from common.model.base import load_spec_model, weights_fingerprint
from common.model.lora import adapter_tensors, lora_config
from common.model.tokenization import require_chat_template, tokenize_pair
from common.trust.digest import tensors_sha256


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
    ``truncated``: kept, but prompt+chosen or prompt+rejected is longer than ``max_length``,
    so TRL trains on its first ``max_length`` tokens only (``keep_start``).
    """

    kept: list[PreferenceExample]
    prompt_too_long: int
    truncated: int


def check_lengths(examples: Sequence[PreferenceExample], tokenizer, max_length: int,
                  max_prompt_length: int = 0) -> LengthCheck:
    """Split ``examples`` by what the length limits do to them (see :class:`LengthCheck`).

    TRL drops prompt-filled examples and truncates long ones without a word; counting them
    here is what lets the owner's reply say how much of its data really trained. The ids are
    :func:`common.model.tokenization.tokenize_pair`'s, the very ones the trainer trains on.
    """
    kept, too_long, truncated = [], 0, 0
    for example in examples:
        pair = tokenize_pair(tokenizer, example, max_prompt_length)
        if pair.prompt_fills(max_length):
            too_long += 1
            continue
        truncated += int(pair.truncated(max_length))
        kept.append(example)
    return LengthCheck(kept, too_long, truncated)


@functools.cache
def dpo_trainer_class():
    """TRL's ``DPOTrainer`` whose dataset preparation is FairPool's one tokenisation.

    Replacing ``_prepare_dataset`` (rather than pre-tokenising, which TRL 1.x does not accept
    for text) is what guarantees the coordinator scores exactly the ids trained on, and adds
    ``max_prompt_length``; a test checks that, without a prompt limit, the ids equal a stock
    ``DPOTrainer``'s list for list, so a TRL change that alters tokenisation is caught.
    """
    from datasets import Dataset
    from trl import DPOTrainer

    class FairPoolDPOTrainer(DPOTrainer):
        def __init__(self, *args, max_prompt_length: int = 0, **kwargs) -> None:
            self.fairpool_max_prompt_length = max_prompt_length  # read while super() prepares the data
            super().__init__(*args, **kwargs)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            pairs = [tokenize_pair(processing_class, PreferenceExample.from_dict(row),
                                   self.fairpool_max_prompt_length) for row in dataset]
            rows = [p.as_row() for p in pairs if args.max_length is None or not p.prompt_fills(args.max_length)]
            return Dataset.from_list(rows)

    return FairPoolDPOTrainer


def precision_flags(resolved: ResolvedHardware) -> dict[str, Any]:
    """TrainingArguments flags for the resolved device and dtype (bf16/fp16 mixed precision)."""
    import torch

    return {"use_cpu": resolved.device == "cpu",
            "bf16": resolved.dtype == torch.bfloat16,
            "fp16": resolved.dtype == torch.float16}


def make_dpo_trainer(spec: TrainingSpec, model, tokenizer, examples: Sequence[PreferenceExample], output_dir: str,
                     resolved: ResolvedHardware | None = None):
    """TRL's DPOTrainer for ``spec``: plain base model + ``peft_config`` ⇒ reference = π₀.

    TRL then keeps no reference model (``ref_model is None``) and no "ref" adapter: it
    computes reference log-probs with the adapter disabled, i.e. under π₀ exactly.
    """
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig

    resolved = resolved or Hardware(device="cpu").resolve()
    args = DPOConfig(
        output_dir=output_dir,
        **precision_flags(resolved),
        activation_checkpointing=False,  # TRL defaults to on: slower, and pointless for small models
        learning_rate=spec.learning_rate,
        num_train_epochs=spec.epochs,
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
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
    trainer = dpo_trainer_class()(
        model=model,
        max_prompt_length=spec.max_prompt_length,
        args=args,
        train_dataset=Dataset.from_list([e.as_dict() for e in examples]),
        processing_class=tokenizer,
        peft_config=lora_config(spec, model),
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
    return trainer


StepReport = Callable[[dict], None]
"""Receives a training-progress event: ``step``, ``steps``, ``epoch``, ``loss``, ``eta_s``, ``message``."""


def step_reporter(report: StepReport, every_s: float = 2.0):
    """A ``TrainerCallback`` that reports the step, epoch, loss and ETA at most every ``every_s``
    seconds, and once at the end: what a user watching a long training wants to see."""
    from transformers import TrainerCallback

    class StepReporter(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.monotonic()
            self.last = float("-inf")
            self.step = -1
            self.loss = float("nan")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
            now = time.monotonic()
            done = state.global_step >= state.max_steps
            if state.global_step == self.step:
                return  # the end-of-training log repeats the last step
            if now - self.last >= every_s or done:
                self.last, self.step = now, state.global_step
                step, steps = int(state.global_step), int(state.max_steps)
                eta = (now - self.started) / step * (steps - step) if step else float("nan")
                report({"step": step, "steps": steps, "epoch": round(float(state.epoch or 0.0), 3),
                        "loss": self.loss, "eta_s": round(eta, 1),
                        "message": f"step {step}/{steps}, epoch {float(state.epoch or 0.0):.2f}, "
                                   f"loss {self.loss:.4f}, ETA {eta:.0f}s"})

    return StepReporter()


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
             progress: Callable[[str], None] = lambda _msg: None, resolved: ResolvedHardware | None = None,
             on_step: StepReport | None = None):
    """DPO-train a fresh LoRA adapter on ``model``, whose own weights are the reference.

    Returns ``(trainer, metrics, kept, dropped)``; ``trainer.model`` is the PeftModel.
    """
    import torch

    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    require_chat_template(tokenizer, spec.base_model, examples[:1])
    lengths = check_lengths(examples, tokenizer, spec.max_length, spec.max_prompt_length)
    kept = lengths.kept
    dropped = {"prompt_too_long": lengths.prompt_too_long} if lengths.prompt_too_long else {}
    if not kept:
        raise FairPoolError(
            f"no usable examples: all {len(examples)} dropped (prompt_too_long: the prompt alone "
            f"fills max_length={spec.max_length} tokens)"
        )
    with tempfile.TemporaryDirectory(prefix="fairpool-dpo-") as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TRL calls deprecated transformers helpers
        trainer = make_dpo_trainer(spec, model, tokenizer, kept, scratch, resolved)
        if on_step is not None:
            trainer.add_callback(step_reporter(on_step))
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


def check_base_identity(spec: TrainingSpec) -> None:
    """Refuse to train on a base model whose weight files differ from the coordinator's π₀."""
    if spec.base_fingerprint and weights_fingerprint(spec.base_model) != spec.base_fingerprint:
        raise FairPoolError(
            f"base model at {spec.base_model} does not match the coordinator's fingerprint "
            f"{spec.base_fingerprint[:12]}…: every owner must train on the same π₀"
        )


def train_adapter(
    spec: TrainingSpec,
    examples: Sequence[PreferenceExample],
    *,
    hardware: Hardware | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
    on_step: StepReport | None = None,
) -> AdapterResult:
    """Fine-tune a LoRA adapter with DPO on ``examples``; reference = π₀ (adapters disabled).

    ``hardware`` defaults to ``auto``: a GPU when this machine has one. ``on_step`` receives
    the training's progress every few seconds (:func:`step_reporter`).
    """
    prepare_training()
    check_base_identity(spec)
    hardware = hardware or Hardware()
    model, tokenizer = load_spec_model(spec, hardware)
    trainer, metrics, kept, dropped = fit_lora(spec, model, tokenizer, examples, progress, hardware.resolve(),
                                               on_step)
    return AdapterResult(adapter_tensors(trainer.model), len(kept), dropped, metrics)
