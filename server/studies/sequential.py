"""Really retrained coalition models, for measuring how faithful the arithmetic is (method.md §5).

*Sequential DPO* is the paper's Algorithm 1: DPO on the first owner's data with π₀ as the
reference, then on the next owner's data with the model obtained so far as the reference, and
so on. With TRL and PEFT each stage trains a fresh LoRA adapter on a *plain* model whose
weights are the previous stage's result (so the reference is that model: the adapter disabled),
then merges the adapter into the weights (``merge_and_unload``), which become the next stage's
reference. *DPO on the union* trains one adapter on the coalition's pooled data, reference π₀.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from client.trainer import AdapterResult, fit_lora, prepare_training, train_adapter
from common.config.hardware import Hardware
from common.config.spec import TrainingSpec
from common.data import PreferenceExample
from common.model.base import load_spec_model


@dataclass
class SequentialResult:
    """The final merged model of a sequential DPO chain and each stage's training metrics."""

    model: object
    tokenizer: object
    stage_metrics: list[dict[str, float]] = field(default_factory=list)


def train_sequential(spec: TrainingSpec, stages: Sequence[Sequence[PreferenceExample]],
                     progress: Callable[[str], None] = lambda _m: None, hardware=None) -> SequentialResult:
    """Algorithm 1 over ``stages`` (one owner's examples each, in order); stage k is seeded seed+k."""
    prepare_training()
    hardware = hardware or Hardware()
    model, tokenizer = load_spec_model(spec, hardware)
    metrics = []
    for k, examples in enumerate(stages):
        progress(f"sequential DPO stage {k + 1}/{len(stages)}")
        trainer, stage_metrics, _kept, _dropped = fit_lora(replace(spec, seed=spec.seed + k), model, tokenizer,
                                                           examples, resolved=hardware.resolve())
        model = trainer.model.merge_and_unload()  # this stage's policy is the next stage's reference
        model.eval()
        metrics.append(stage_metrics)
    return SequentialResult(model, tokenizer, metrics)


def train_union(spec: TrainingSpec, datasets: Sequence[Sequence[PreferenceExample]],
                progress: Callable[[str], None] = lambda _m: None, hardware=None) -> AdapterResult:
    """DPO on the pooled data of a coalition, reference π₀."""
    pooled = [example for data in datasets for example in data]
    return train_adapter(spec, pooled, hardware=hardware, progress=progress)
