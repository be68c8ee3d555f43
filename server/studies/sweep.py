"""Why the arithmetic does or does not match retraining: the fidelity study over training settings.

The paper's equality of arithmetic and retrained coalitions holds when every DPO stage reaches
its optimum. Whether it holds here depends on how far training goes (epochs, learning rate),
so the sweep runs the same study under several settings and puts, side by side, how well each
composition rule tracks each retrained variant and how order-dependent sequential DPO is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ConfigError

SWEEP_KEYS = {"epochs": "epochs", "learning-rate": "learning_rate"}


def parse_setting(text: str) -> dict[str, float]:
    """``"epochs=9,learning-rate=1e-3"`` → ``{"epochs": 9.0, "learning_rate": 0.001}``."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in SWEEP_KEYS:
            raise ConfigError(f"--setting {text!r}: expected KEY=VALUE with KEY in {', '.join(SWEEP_KEYS)}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"--setting {text!r}: {value!r} is not a number") from None
        if not (np.isfinite(number) and number > 0):
            raise ConfigError(f"--setting {text!r}: {key} must be positive")
        out[SWEEP_KEYS[key.strip()]] = number
    if not out:
        raise ConfigError(f"--setting {text!r} sets nothing")
    return out


def setting_label(spec_record: Mapping[str, Any]) -> str:
    """A directory-safe name of a study's training setting, e.g. ``epochs-3_lr-0.005``."""
    return f"epochs-{float(spec_record['epochs']):g}_lr-{float(spec_record['learning_rate']):g}"


def summarise_sweep(reports: Mapping[str, dict]) -> dict:
    """One row per setting: training progress, agreement per rule and route, order sensitivity."""
    rows = []
    for label, report in reports.items():
        diag = report.get("diagnostics", {})
        row = {
            "setting": label,
            "epochs": report["spec"]["epochs"],
            "learning_rate": report["spec"]["learning_rate"],
            "mean_final_loss": _mean(d.get("train_loss") for d in diag.values()),
            "mean_abs_reward_margin": _mean(abs(d["eval_reward_margin"]) for d in diag.values()),
            "max_order_spread": report["order_sensitivity"]["max_spread"],
            "mean_order_spread": report["order_sensitivity"]["mean_spread"],
            "agreement": {metric: {k: {"spearman": v["spearman"], "pearson": v["pearson"],
                                       "mean_abs_error": v["mean_abs_error"]} for k, v in report[key].items()}
                          for metric, key in (("accuracy", "agreement"), ("logsigmoid", "agreement_logsigmoid"))
                          if key in report},
            "kendall_tau": dict(report.get("shapley", {}).get("kendall_tau", {})),
            "retrain_seconds": report["cost"]["sequential"]["seconds"] + report["cost"]["union"]["seconds"],
        }
        rows.append(row)
    return {"settings": rows}


def _mean(values) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def render_sweep_markdown(summary: dict) -> str:
    """Two tables: Spearman per rule/route/metric by setting, then training progress and order spread."""
    rows = summary["settings"]
    pairs = sorted({k for r in rows for k in r["agreement"].get("accuracy", {})})
    lines = ["# Fidelity across training settings", "",
             "Spearman correlation between arithmetic and retrained coalition utilities (accuracy / logsigmoid):", "",
             "| setting | " + " | ".join(p.replace("_vs_", " vs ") for p in pairs) + " |",
             "|---|" + "---:|" * len(pairs)]
    for r in rows:
        cells = []
        for p in pairs:
            acc = r["agreement"].get("accuracy", {}).get(p, {}).get("spearman", float("nan"))
            log = r["agreement"].get("logsigmoid", {}).get(p, {}).get("spearman", float("nan"))
            cells.append(f"{acc:.2f} / {log:.2f}")
        lines.append(f"| {r['setting']} | " + " | ".join(cells) + " |")
    taus = sorted({k for r in rows for k in r["kendall_tau"]})
    lines += ["", "| setting | mean final DPO loss | mean abs reward margin | max order spread | mean order spread | "
              + " | ".join(f"τ {t.replace('arithmetic_', '').replace('_vs_', ' vs ')}" for t in taus) + " |",
              "|---|---:|---:|---:|---:|" + "---:|" * len(taus)]
    for r in rows:
        loss = "n/a" if r["mean_final_loss"] is None else f"{r['mean_final_loss']:.3f}"
        margin = "n/a" if r["mean_abs_reward_margin"] is None else f"{r['mean_abs_reward_margin']:.3f}"
        lines.append(f"| {r['setting']} | {loss} | {margin} | {r['max_order_spread']:.2f} | "
                     f"{r['mean_order_spread']:.3f} | " + " | ".join(f"{r['kendall_tau'].get(t, float('nan')):.2f}"
                                                                     for t in taus) + " |")
    return "\n".join(lines) + "\n"


def render_sweep_plot(summary: dict, path: Path) -> None:
    """Spearman (accuracy) of each rule against each retrained variant, one group per setting."""
    from server.report.figures import pyplot, save_figure

    plt, _ = pyplot()
    rows = summary["settings"]
    pairs = sorted({k for r in rows for k in r["agreement"].get("accuracy", {})})
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows) + 2), 4.5), constrained_layout=True)
    width = 0.8 / max(1, len(pairs))
    x = np.arange(len(rows))
    for j, pair in enumerate(pairs):
        ax.bar(x + j * width - 0.4 + width / 2,
               [r["agreement"]["accuracy"].get(pair, {}).get("spearman", np.nan) for r in rows],
               width, label=pair.replace("_vs_", " vs "))
    ax.axhline(0.9, color="grey", linestyle="--", linewidth=0.8)
    ax.set_ylim(0, 1.3)  # headroom so the legend sits above the bars
    ax.set_xticks(x, [r["setting"] for r in rows], rotation=20)
    ax.set_ylabel("Spearman (coalition accuracy)")
    ax.set_title("Arithmetic vs retrained coalitions, by training setting (dashed: 0.9)")
    ax.legend(fontsize=7, ncol=3, loc="upper center")
    save_figure(fig, plt, path)


def write_sweep(summary: dict, out_dir: str | Path) -> None:
    """``sweep.json`` (last), ``sweep.md`` and ``sweep.png`` in ``out_dir``."""
    from common.storage.atomic import atomic_write
    from server.report.schema import PUBLIC_FILE_MODE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    render_sweep_plot(summary, out / "sweep.png")
    atomic_write(out / "sweep.md", render_sweep_markdown(summary).encode(), PUBLIC_FILE_MODE)
    atomic_write(out / "sweep.json", (json.dumps(summary, indent=2) + "\n").encode(), PUBLIC_FILE_MODE)


def labels_unique(labels: Sequence[str]) -> None:
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two --setting values give the same training setting: {sorted(labels)}")
