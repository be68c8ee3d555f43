"""The audit stage of the pipeline: really retrain K coalitions and compare with the arithmetic.

Arithmetic coalitions are only as fair as the approximation (method.md §5; docs/fidelity.md
measures it on the embedded market). ``--audit K`` checks it inside the run itself, on the
owners' own data: after valuation the federation retrains K coalitions by sequential DPO — the
chain's first stage is its first owner's own adapter, every next stage is trained by the next
owner, on its own data, on the model of the stages so far — and the report's ``audit`` block
sets each coalition's arithmetic utility beside its retrained one.

Who trains is behind :class:`Retrainer`, so this module holds the plan and the comparison and
no Flower: the federation's retrainer (``server/federation/audit_grid.py``) sends each stage to
its owner's node. The chain travels as its stage adapters (a few MB, not the model): the owner
rebuilds the model by merging them into π₀ in order (:func:`common.model.lora.merge_chain`),
and so does the coordinator to score the finished chain. Owners consent to receiving models
trained on others' data; a coalition with an owner who did not is skipped, and the report says
who and why.
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from common.config.games import PREFERENCE_UTILITIES
from common.config.job import ValuationJob
from common.data import PreferenceExample
from common.model.base import load_spec_model
from common.model.lora import merge_chain
from common.trust.canonical import json_sha256
from common.valuation.audit_plan import audited_coalitions, stage_plan
from common.valuation.bits import mask_of
from common.valuation.stats import agreement
from common.valuation.utility import coalition_utilities
from server.valuation.scoring import ModelScorer

Tensors = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class StageTask:
    """One stage to train: the chain ``order`` (owner names; its last owner trains this stage)
    on the model rebuilt from ``chain``, the adapters of the stages before it, in order."""

    order: tuple[str, ...]
    chain: tuple[Tensors, ...]

    @property
    def owner(self) -> str:
        return self.order[-1]


@dataclass
class StageOutcome:
    """What an owner sent back for a stage: its adapter, or why there is none."""

    tensors: dict[str, np.ndarray] | None = None
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


class Retrainer(Protocol):
    """Whoever trains the audit's stages: in a run, the federation's owners."""

    def consent(self, owners: Sequence[str]) -> dict[str, str]:
        """``{owner: why it takes no part}`` for the owners that may not be sent a stage."""
        ...

    def train_stages(self, tasks: Sequence[StageTask]) -> dict[tuple[str, ...], StageOutcome]:
        """Every task's outcome by its order; the tasks are independent (they may run at once)."""
        ...


AUDITED_METRICS: dict[str, str] = dict(PREFERENCE_UTILITIES)
"""Utilities the audit compares: both held-out preference utilities, whatever the games. The
log-sigmoid one is continuous, so its correlation is not blurred by accuracy's plateaus."""


def audit_key(job: ValuationJob, names: Sequence[str], digests: Sequence[str]) -> str:
    """The ledger's name for this audit's block: the same owners, adapters and settings give the
    same audit, so a resumed run reads it instead of retraining."""
    return "audit/" + json_sha256([job.run_id, job.valuation.audit, job.spec.digest(), job.composition,
                                   list(names), list(digests), job.eval_path])


def run_audit(job: ValuationJob, names: Sequence[str], sizes: Sequence[int], margins: np.ndarray,
              adapters: Mapping[str, Tensors], evaluation: Sequence[PreferenceExample], retrainer: Retrainer,
              progress: Callable[..., None] = lambda *_a, **_k: None) -> dict:
    """The report's ``audit`` block for the valued owners ``names`` (their example counts, held-out
    margins and adapters, as valued); ``evaluation`` are the held-out pairs the games scored."""
    started = time.perf_counter()
    k = job.valuation.audit
    chosen = audited_coalitions(len(names), k, job.spec.seed)
    block: dict = {"requested": k, "seed": job.spec.seed, "order": "roster order within each coalition",
                   "utilities": list(AUDITED_METRICS), "coalitions": [], "skipped": [], "declined": {},
                   "fine_tunings": 0}
    if not chosen:
        block["note"] = "fewer than two owners were valued: no coalition of two or more to retrain"
        return _finish(block, started)
    label = ["+".join(names[i] for i in c) for c in chosen]
    progress("audit", f"auditing {len(chosen)} coalition(s) by sequential DPO: {', '.join(label)}")
    declined = retrainer.consent(names)
    block["declined"] = dict(sorted(declined.items()))
    for owner, reason in sorted(declined.items()):
        progress("audit", f"{owner} takes no part in the audit: {reason}", owner=owner)
    auditable = []
    for members in chosen:
        refusing = [names[i] for i in members if names[i] in declined]
        if refusing:
            block["skipped"].append({"members": [names[i] for i in members],
                                     "reason": f"no consent from {', '.join(refusing)}"})
        else:
            auditable.append(members)
    stages, failed = _train_chains(auditable, names, adapters, retrainer, progress)
    block["fine_tunings"] = len(stages) - len(names)
    rows = _compare(job, auditable, names, sizes, margins, stages, failed, evaluation, block, progress)
    block["coalitions"] = rows
    if rows:
        block["agreement"] = {utility: agreement([r["arithmetic"][utility] for r in rows],
                                                 [r["retrained"][utility] for r in rows])
                              for utility in AUDITED_METRICS}
    return _finish(block, started)


def _train_chains(coalitions: Sequence[tuple[int, ...]], names: Sequence[str], adapters: Mapping[str, Tensors],
                  retrainer: Retrainer, progress: Callable[..., None]
                  ) -> tuple[dict[tuple[int, ...], Tensors], dict[tuple[int, ...], str]]:
    """Every stage the coalitions' chains need, depth by depth; returns each prefix's stage adapter
    (one-owner prefixes are the owners' own) and, for prefixes that could not be trained, why."""
    stages: dict[tuple[int, ...], Tensors] = {(i,): adapters[name] for i, name in enumerate(names)}
    failed: dict[tuple[int, ...], str] = {}
    plan = stage_plan(coalitions)
    total, done = sum(len(depth) for depth in plan), 0
    for depth in plan:
        tasks, prefixes = [], []
        for prefix in depth:
            if prefix[:-1] in failed:
                failed[prefix] = failed[prefix[:-1]]
                continue
            prefixes.append(prefix)
            tasks.append(StageTask(tuple(names[i] for i in prefix),
                                   tuple(stages[prefix[:j]] for j in range(1, len(prefix)))))
        if not tasks:
            done += len(depth)
            continue
        progress("audit", f"sequential DPO stage {len(depth[0])}, {len(tasks)} chain(s) at once: "
                          + ", ".join(" → ".join(t.order) for t in tasks))
        outcomes = retrainer.train_stages(tasks)
        for prefix, task in zip(prefixes, tasks):
            outcome = outcomes.get(task.order) or StageOutcome(error="no reply")
            if outcome.tensors is not None and not outcome.error:
                stages[prefix] = outcome.tensors
            else:
                failed[prefix] = f"stage {len(prefix)} ({task.owner}) failed: {outcome.error or 'no adapter'}"
                progress("audit", f"{' → '.join(task.order)}: {failed[prefix]}", owner=task.owner)
        done += len(depth)
        progress("audit", f"{done} of {total} audit stage(s) done", done=done, total=total)
    return stages, failed


def _compare(job: ValuationJob, coalitions: Sequence[tuple[int, ...]], names: Sequence[str], sizes: Sequence[int],
             margins: np.ndarray, stages: Mapping[tuple[int, ...], Tensors], failed: Mapping[tuple[int, ...], str],
             evaluation: Sequence[PreferenceExample], block: dict, progress: Callable[..., None]) -> list[dict]:
    """Each finished chain's retrained utilities beside the arithmetic ones (the game's formula)."""
    done = [c for c in coalitions if c not in failed]
    for members in coalitions:
        if members in failed:
            block["skipped"].append({"members": [names[i] for i in members], "reason": failed[members]})
    if not done:
        return []
    scorer: ModelScorer | None = None
    rows = []
    model = None
    for members in done:
        # One chain model at a time: a real base is gigabytes, and the valuation's model is still held.
        model = None
        gc.collect()
        base = load_spec_model(job.spec, job.hardware)
        if scorer is None:  # π₀'s log-probs, from the first fresh base before anything is merged into it
            scorer = ModelScorer(job.spec, evaluation, base=base)
        model = merge_chain(base[0], job.spec, [stages[members[:j]] for j in range(1, len(members) + 1)])
        retrained = scorer.utilities_of(model, list(AUDITED_METRICS.values()))
        mask = np.array([mask_of(members)], dtype=np.int64)
        arithmetic = {utility: float(coalition_utilities(margins, mask, metric, job.composition, sizes,
                                                         beta=job.spec.beta)[0])
                      for utility, metric in AUDITED_METRICS.items()}
        again = {utility: retrained[metric] for utility, metric in AUDITED_METRICS.items()}
        row: dict[str, object] = {"members": [names[i] for i in members], "arithmetic": arithmetic, "retrained": again,
               "error": {u: arithmetic[u] - again[u] for u in AUDITED_METRICS}}
        rows.append(row)
        progress("audit", f"{'+'.join(names[i] for i in members)}: arithmetic {arithmetic['preference']:.4f}, "
                          f"retrained {again['preference']:.4f} (accuracy)")
    return rows


def _finish(block: dict, started: float) -> dict:
    block["wall_s"] = round(time.perf_counter() - started, 3)
    return _finite(json.loads(json.dumps(block)))  # plain JSON values, as the ledger will give them back


def _finite(value):
    """``value`` with every non-finite float as None: a correlation of constant utilities is
    undefined, and the signed report (canonical JSON) holds no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
