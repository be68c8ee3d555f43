"""Really retrained coalition models, for measuring how faithful the arithmetic is (method.md §5).

*Sequential DPO* is the paper's Algorithm 1: DPO on the first owner's data with π₀ as the
reference, then on the next owner's data with the model obtained so far as the reference, and
so on. With TRL and PEFT each stage trains a fresh LoRA adapter on a *plain* model whose
weights are the previous stage's result (so the reference is that model: the adapter disabled),
then merges the adapter into the weights (``merge_and_unload``), which become the next stage's
reference. *DPO on the union* trains one adapter on the coalition's pooled data, reference π₀.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from client.audit import stage_seed
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
    """Algorithm 1 over ``stages`` (one owner's examples each, in order); stage k (1-based) is
    seeded :func:`client.audit.stage_seed`, ``seed + k − 1``."""
    chains: list[SequentialResult] = []
    train_sequential_orders(spec, stages, [tuple(range(len(stages)))],
                            lambda _order, result: chains.append(result), progress=progress, hardware=hardware)
    return chains[0]


Visit = Callable[[tuple[int, ...], SequentialResult], None]


def train_sequential_orders(spec: TrainingSpec, data: Sequence[Sequence[PreferenceExample]],
                            orders: Sequence[tuple[int, ...]], visit: Visit, *,
                            first: Mapping[int, Callable[[], object]] | None = None, names: Sequence[str] = (),
                            progress: Callable[[str], None] = lambda _m: None, hardware=None) -> int:
    """Sequential DPO for every order in ``orders`` (owner indices into ``data``), each shared
    prefix trained once; ``visit(order, result)`` sees each order's final model. Returns the
    number of stages trained. ``names`` label the owners in progress messages.

    Why: chains that share a prefix share its stages exactly (each stage is seeded by its depth and
    reads only the model so far and its owner's data), so the orders form a trie walked depth
    first. With one order per coalition of 4 owners that is 15 stages instead of 32. Keeping a
    branch point costs one copy of the model per depth. ``first[j]()``, when given, returns the
    stage-1 model of owner ``j`` already trained (its own adapter merged into π₀: the same
    model, as stage 1's reference is π₀), which saves those stages too.
    """
    prepare_training()
    hardware = hardware or Hardware()
    wanted = set(orders)
    prefixes = sorted({o[:k] for o in orders for k in range(1, len(o) + 1)}, key=lambda p: (len(p), p))
    children: dict[tuple[int, ...], list[int]] = {}
    for prefix in prefixes:
        children.setdefault(prefix[:-1], []).append(prefix[-1])
    base, tokenizer = load_spec_model(spec, hardware)
    trained = 0

    def walk(prefix: tuple[int, ...], model, metrics: list[dict[str, float]]) -> None:
        nonlocal trained
        if prefix in wanted:
            model.eval()
            visit(prefix, SequentialResult(model, tokenizer, list(metrics)))
        kids = children.get(prefix, [])
        for index, owner in enumerate(kids):
            if not prefix and first is not None and owner in first:
                walk((owner,), first[owner](), [])
                continue
            start = model if index == len(kids) - 1 else copy.deepcopy(model)  # the last child may consume it
            k = len(prefix)
            path = [names[i] if i < len(names) else str(i) for i in prefix + (owner,)]
            progress(f"sequential DPO stage {k + 1}: {' → '.join(path)}")
            trainer, stage_metrics, _kept, _dropped = fit_lora(replace(spec, seed=stage_seed(spec, k + 1)), start, tokenizer,
                                                               data[owner], resolved=hardware.resolve())
            trained += 1
            walk(prefix + (owner,), trainer.model.merge_and_unload(), [*metrics, stage_metrics])

    walk((), base, [])
    return trained


def train_union(spec: TrainingSpec, datasets: Sequence[Sequence[PreferenceExample]],
                progress: Callable[[str], None] = lambda _m: None, hardware=None) -> AdapterResult:
    """DPO on the pooled data of a coalition, reference π₀."""
    pooled = [example for data in datasets for example in data]
    return train_adapter(spec, pooled, hardware=hardware, progress=progress)
