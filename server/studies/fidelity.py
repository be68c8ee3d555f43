"""The fidelity and cost study: arithmetic coalitions against really retrained ones (method.md §5).

For each studied coalition S the preference utility (held-out accuracy, ties ½) is measured
three ways: (1) by arithmetic on the owners' individually trained adapters (the federation's
route, per composition rule), (2) on sequential-DPO models (Algorithm 1) for several orders
of S's owners, (3) on a model DPO-trained on the union of S's data. Retraining reuses what is the
same model by construction: chains sharing a prefix share its stages, a chain's first stage and
a one-owner union are that owner's own adapter. The study reports how well
(1) tracks (2) and (3), how the Shapley values and rankings compare, how much the order of
sequential DPO matters, and what each route costs.
"""

from __future__ import annotations

import functools
import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from client.trainer import train_adapter
from common.config.spec import TrainingSpec
from common.data import PreferenceExample
from common.model.base import load_spec_model
from common.model.lora import load_adapters, merge_chain
from common.valuation.bits import mask_of
from common.valuation.shapley import exact_shapley
from common.valuation.stats import agreement, kendall_tau
from common.valuation.utility import all_masks, coalition_utilities
from server.studies.sequential import train_sequential_orders, train_union
from server.valuation.scoring import ModelScorer, score_evaluation


def studied_coalitions(n: int, coalitions: str | int, seed: int) -> list[tuple[int, ...]]:
    """All non-empty coalitions, or a seeded sample of K of them."""
    every = [c for size in range(1, n + 1) for c in itertools.combinations(range(n), size)]
    if coalitions == "all":
        return every
    k = int(coalitions)
    if not 1 <= k <= len(every):
        raise ValueError(f"--coalitions must be 'all' or between 1 and {len(every)}")
    return sorted(random.Random(seed).sample(every, k), key=lambda c: (len(c), c))


def orders_of(members: tuple[int, ...], count: int, seed: int) -> list[tuple[int, ...]]:
    """Up to ``count`` distinct orders of ``members``: the given order first, then seeded shuffles."""
    perms = list(itertools.permutations(members))
    if len(perms) <= count:
        return perms
    rng = random.Random(f"{seed}-{members}")
    rest = perms[1:]
    return [perms[0], *rng.sample(rest, count - 1)]


METRICS = ("accuracy", "logsigmoid")
"""Accuracy is the federation's utility; ``logsigmoid`` (mean log σ(β·m), minus the DPO loss) is
continuous, so agreement measured on it is not blurred by accuracy saturating at 0 or 1."""


def run_fidelity(spec: TrainingSpec, owners: Mapping[str, Sequence[PreferenceExample]],
                 evaluation: Sequence[PreferenceExample], *, coalitions: str | int = "all", orders: int = 2,
                 rules: Sequence[str] = ("sum", "mean", "size"), seed: int = 0,
                 progress: Callable[[str], None] = lambda _m: None, hardware=None) -> dict:
    """The whole study; returns the ``fidelity.json`` document.

    Rows and ``agreement`` use accuracy (the federation's utility); ``logsigmoid`` holds the
    same comparison on the continuous metric. ``diagnostics`` records how far each owner's
    training got (final DPO loss, implicit reward margin on the held-out pairs), which is what
    decides whether the arithmetic can match retraining.
    """
    names = list(owners)
    n = len(names)
    chosen = studied_coalitions(n, coalitions, seed)
    evaluator = ModelScorer(spec, evaluation, hardware)

    started = time.perf_counter()
    adapters, sizes, diagnostics = {}, [], {}
    for name in names:
        progress(f"arithmetic route: training {name}")
        result = train_adapter(spec, owners[name], hardware=hardware)
        adapters[name] = result.tensors
        sizes.append(result.num_examples)
        diagnostics[name] = {"train_loss": result.metrics.get("train_loss"), "steps": result.metrics.get("steps")}
    base, tokenizer = load_spec_model(spec, hardware)
    peft = load_adapters(base, spec, adapters)
    scored = score_evaluation(peft, tokenizer, names, evaluation, spec.max_length,
                              max_prompt_length=spec.max_prompt_length)
    masks = np.array([mask_of(c) for c in chosen], dtype=np.int64)
    arithmetic = {metric: {rule: coalition_utilities(scored.margins, masks, metric, rule, sizes, beta=spec.beta)
                           for rule in rules} for metric in METRICS}
    full_arith = {rule: coalition_utilities(scored.margins, all_masks(n), "accuracy", rule, sizes) for rule in rules}
    arith_seconds = time.perf_counter() - started
    for i, name in enumerate(names):  # β·margin is the owner's implicit reward gap on held-out pairs
        diagnostics[name]["eval_reward_margin"] = float(spec.beta * scored.margins[i].mean())

    def merged(name: str):
        """Owner ``name``'s stage-1 model: π₀ with its own adapter merged (the arithmetic route's)."""
        return merge_chain(load_spec_model(spec, hardware)[0], spec, [adapters[name]])

    # Sequential DPO: every order of every coalition, each shared prefix trained once and the
    # first stage taken from the owners' own adapters (server.studies.sequential).
    coalition_orders = {members: orders_of(members, orders, seed) for members in chosen}
    chain_utilities: dict[tuple[int, ...], dict[str, float]] = {}
    t0 = time.perf_counter()

    def score_chain(order: tuple[int, ...], chain) -> None:
        chain_utilities[order] = evaluator.utilities_of(chain.model, METRICS)

    seq_trainings = train_sequential_orders(
        spec, [owners[name] for name in names], [o for os_ in coalition_orders.values() for o in os_], score_chain,
        first={i: functools.partial(merged, names[i]) for i in range(n)}, names=names,
        progress=progress, hardware=hardware)
    seq_seconds = time.perf_counter() - t0
    sequential: dict[str, list[float]] = {m: [] for m in METRICS}
    union: dict[str, list[float]] = {m: [] for m in METRICS}
    spreads = []
    union_seconds = 0.0
    union_trainings = 0
    for members in chosen:
        label = "+".join(names[i] for i in members)
        per_order = [chain_utilities[order] for order in coalition_orders[members]]
        for m in METRICS:
            sequential[m].append(float(np.mean([u[m] for u in per_order])))
        accs = [u["accuracy"] for u in per_order]
        spreads.append(float(max(accs) - min(accs)))
        t0 = time.perf_counter()
        if len(members) == 1:  # DPO on one owner's data is that owner's own adapter: no retraining
            pooled_tensors = adapters[names[members[0]]]
        else:
            progress(f"DPO on the union: {label}")
            pooled_tensors = train_union(spec, [owners[names[i]] for i in members], hardware=hardware).tensors
            union_trainings += 1
        pooled_utils = evaluator.utilities_of(load_adapters(load_spec_model(spec, hardware)[0], spec,
                                                            {"union": pooled_tensors}), METRICS)
        for m in METRICS:
            union[m].append(pooled_utils[m])
        union_seconds += time.perf_counter() - t0

    rows = [{"members": [names[i] for i in c],
             **{f"arithmetic_{r}": float(arithmetic["accuracy"][r][k]) for r in rules},
             "sequential": sequential["accuracy"][k], "sequential_order_spread": spreads[k],
             "union": union["accuracy"][k],
             "logsigmoid": {**{f"arithmetic_{r}": float(arithmetic["logsigmoid"][r][k]) for r in rules},
                            "sequential": sequential["logsigmoid"][k], "union": union["logsigmoid"][k]}}
            for k, c in enumerate(chosen)]

    def agreement_on(metric: str) -> dict:
        return {f"{rule}_vs_{route}": agreement(arithmetic[metric][rule], values[metric])
                for rule in rules for route, values in (("sequential", sequential), ("union", union))}

    report = {
        "owners": names, "sizes": sizes, "num_eval_pairs": len(evaluation), "orders": orders,
        "coalitions": rows, "agreement": agreement_on("accuracy"),
        "agreement_logsigmoid": agreement_on("logsigmoid"),
        "order_sensitivity": {"max_spread": float(max(spreads)), "mean_spread": float(np.mean(spreads))},
        "diagnostics": diagnostics,
        "cost": {
            "arithmetic": {"seconds": arith_seconds, "fine_tunings": n},
            "sequential": {"seconds": seq_seconds, "fine_tunings": seq_trainings,
                           "stages_in_chains": sum(len(o) for os_ in coalition_orders.values() for o in os_)},
            "union": {"seconds": union_seconds, "fine_tunings": union_trainings},
            "retrain_over_arithmetic_time": (seq_seconds + union_seconds) / arith_seconds,
        },
        "spec": spec.to_record(),
    }
    if coalitions == "all":
        report["shapley"] = _shapley_comparison(names, full_arith, chosen, sequential["accuracy"],
                                                union["accuracy"])
    return report


def _shapley_comparison(names, full_arith, chosen, sequential, union) -> dict:
    n = len(names)
    out = {}
    for route, values in (("sequential", sequential), ("union", union)):
        table = np.full(1 << n, 0.5)
        for members, value in zip(chosen, values):
            table[mask_of(members)] = value
        out[route] = dict(zip(names, exact_shapley(table, n).tolist()))
    for rule, table in full_arith.items():
        out[f"arithmetic_{rule}"] = dict(zip(names, exact_shapley(table, n).tolist()))
    out["kendall_tau"] = {f"{a}_vs_{b}": kendall_tau([out[a][x] for x in names], [out[b][x] for x in names])
                          for a in (k for k in out if k.startswith("arithmetic_")) for b in ("sequential", "union")}
    return out


def render_fidelity_markdown(report: dict) -> str:
    """The study as a human reads it: agreement first, then every coalition, then cost."""
    rules = [k[len("arithmetic_"):] for k in report["coalitions"][0] if k.startswith("arithmetic_")]
    lines = ["# Fidelity of arithmetic coalitions", "",
             f"Owners: {', '.join(report['owners'])} (sizes {report['sizes']}); {report['num_eval_pairs']} "
             f"held-out pairs; sequential DPO over up to {report['orders']} orders per coalition.", "",
             "| comparison | Pearson | Spearman | max abs error | mean abs error |", "|---|---:|---:|---:|---:|"]
    for metric, key in (("accuracy", "agreement"), ("logsigmoid", "agreement_logsigmoid")):
        for name, a in report.get(key, {}).items():
            lines.append(f"| {name.replace('_vs_', ' vs ')} ({metric}) | {a['pearson']:.3f} | {a['spearman']:.3f} | "
                         f"{a['max_abs_error']:.3f} | {a['mean_abs_error']:.3f} |")
    if "diagnostics" in report:
        lines += ["", "| owner | final DPO loss | steps | held-out reward margin β·m̄ |", "|---|---:|---:|---:|"]
        for owner, d in report["diagnostics"].items():
            loss = "n/a" if d.get("train_loss") is None else f"{d['train_loss']:.3f}"
            steps = "n/a" if d.get("steps") is None else f"{d['steps']:.0f}"
            lines.append(f"| {owner} | {loss} | {steps} | {d['eval_reward_margin']:+.3f} |")
    lines += ["", "| coalition | " + " | ".join(f"arithmetic ({r})" for r in rules)
              + " | sequential (mean) | order spread | union |", "|---|" + "---:|" * (len(rules) + 3)]
    for row in report["coalitions"]:
        arith = " | ".join(f"{row['arithmetic_' + r]:.3f}" for r in rules)
        lines.append(f"| {', '.join(row['members'])} | {arith} | {row['sequential']:.3f} | "
                     f"{row['sequential_order_spread']:.3f} | {row['union']:.3f} |")
    if "shapley" in report:
        shapley = report["shapley"]
        routes = [k for k in shapley if k != "kendall_tau"]
        lines += ["", "| owner | " + " | ".join(routes) + " |", "|---|" + "---:|" * len(routes)]
        for owner in report["owners"]:
            lines.append(f"| {owner} | " + " | ".join(f"{shapley[r][owner]:+.3f}" for r in routes) + " |")
        lines += ["", "Kendall's τ of the owner rankings: "
                  + ", ".join(f"{k.replace('_vs_', ' vs ')} {v:.2f}" for k, v in shapley["kendall_tau"].items())]
    cost = report["cost"]
    lines += ["", "| route | fine-tunings | seconds |", "|---|---:|---:|"]
    for route in ("arithmetic", "sequential", "union"):
        lines.append(f"| {route} | {cost[route]['fine_tunings']} | {cost[route]['seconds']:.1f} |")
    lines.append(f"\nRetraining took {cost['retrain_over_arithmetic_time']:.1f}× the arithmetic route's time.")
    return "\n".join(lines) + "\n"


def render_fidelity_plot(report: dict, path) -> None:
    """Arithmetic utility against each retrained utility, one colour per variant."""
    from server.report.figures import pyplot, save_figure

    plt, _ = pyplot()
    rows = report["coalitions"]
    fig, ax = plt.subplots(figsize=(6, 5), constrained_layout=True)
    rules = [k for k in rows[0] if k.startswith("arithmetic_")]
    for rule in rules:
        for route, marker in (("sequential", "o"), ("union", "s")):
            ax.scatter([r[rule] for r in rows], [r[route] for r in rows], marker=marker,
                       label=f"{rule.split('_', 1)[1]} vs {route}", alpha=0.8)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.set_xlabel("arithmetic coalition utility (preference accuracy)")
    ax.set_ylabel("retrained coalition utility")
    ax.set_title("Arithmetic vs retrained coalitions")
    ax.legend()
    save_figure(fig, plt, path)


def write_fidelity(report: dict, out_dir) -> None:
    """``fidelity.json`` (last), ``fidelity.md`` and ``fidelity.png`` in ``out_dir``."""
    import json
    from pathlib import Path

    from common.storage.atomic import atomic_write
    from server.report.schema import PUBLIC_FILE_MODE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    render_fidelity_plot(report, out / "fidelity.png")
    atomic_write(out / "fidelity.md", render_fidelity_markdown(report).encode(), PUBLIC_FILE_MODE)
    atomic_write(out / "fidelity.json", (json.dumps(report, indent=2) + "\n").encode(), PUBLIC_FILE_MODE)
