"""Writing a run's report: ``report.json`` (the contract), ``report.md`` and ``values.png``.

Every file is written to a temporary name and renamed into place, and ``report.json`` goes
last: a reader that finds ``report.json`` finds a complete report.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
VALUES_PNG = "values.png"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def payout_game(report: dict) -> dict:
    """The game the payout is computed from."""
    return next(g for g in report["games"] if g["utility"] == report["payout"]["game"])


def render_markdown(report: dict) -> str:
    """A human summary: the owner table first, then how it was computed."""
    game = payout_game(report)
    payout = report["payout"]
    lines = [
        f"# FairPool valuation report — run `{report['run_id']}`",
        "",
        f"Utility **{game['utility']}** ({game['metric']} on {game['num_eval_pairs']} held-out pairs), "
        f"composition rule **{game['composition']}**, estimator **{game['estimator']}** ({game['status']}).",
        f"v(∅) = {game['empty']:.4f}, v(N) = {game['grand']:.4f}; the values below sum to "
        f"v(N) − v(∅) = {game['grand'] - game['empty']:+.4f}.",
        "",
        f"Payout: {payout['policy_description']} Budget: {payout['budget']:g}.",
        "",
        "| owner | examples | status | Shapley value | payout share | amount |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for owner in report["owners"]:
        name = owner["name"]
        value = game["values"].get(name)
        shown = f"{value['shapley']:+.4f}" if value else "—"
        share = payout["shares"].get(name)
        amount = payout["amounts"].get(name)
        status = owner["status"] + (" ⚑ negative" if name in payout["flagged"] else "")
        lines.append(
            f"| {name} | {owner['num_examples']} | {status} | {shown} | "
            f"{'—' if share is None else f'{share:.1%}'} | "
            f"{'—' if amount is None else f'{amount:.2f}'} |"
        )
    rejected = [o for o in report["owners"] if o["status"] == "rejected"]
    if rejected:
        lines += ["", "## Rejected owners", ""]
        lines += [f"- **{o['name']}**: {o['reason']}" for o in rejected]
    lines += ["", "## Coalition utilities", "", "| coalition | accuracy | mean log σ(β·m) |", "|---|---:|---:|"]
    for row in sorted(game["coalitions"], key=lambda r: (len(r["members"]), r["members"])):
        members = ", ".join(row["members"]) or "∅ (base model)"
        lines.append(f"| {members} | {row['value']:.4f} | {row['logsigmoid']:.4f} |")
    settings = report.get("settings", {})
    lines += ["", "## Settings", "", f"- base model: `{settings.get('base_model', '?')}`",
              f"- base fingerprint: `{settings.get('base_fingerprint', '')[:16]}…`",
              f"- training spec digest: `{settings.get('spec_sha256', '')[:16]}…`"]
    for owner in report["owners"]:
        if owner["adapter_sha256"]:
            lines.append(f"- adapter of {owner['name']}: sha256 `{owner['adapter_sha256']}`")
    return "\n".join(lines) + "\n"


def render_plot(report: dict, path: Path) -> None:
    """Bar chart: Shapley value (with stderr) and payout share per owner, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    game = payout_game(report)
    names = list(game["values"])
    values = [game["values"][n]["shapley"] for n in names]
    errors = [game["values"][n]["stderr"] for n in names]
    shares = [report["payout"]["shares"].get(n, 0.0) for n in names]
    fig, (ax_v, ax_s) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    colours = ["#2a9d8f" if v >= 0 else "#e76f51" for v in values]
    ax_v.bar(names, values, yerr=errors, color=colours, capsize=3)
    ax_v.axhline(0, color="black", linewidth=0.8)
    ax_v.set_title(f"Shapley value ({game['utility']} {game['metric']})")
    ax_s.bar(names, shares, color="#264653")
    ax_s.set_title(f"Payout share ({report['payout']['policy']} policy)")
    ax_s.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    for ax in (ax_v, ax_s):
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"FairPool run {report['run_id']}")
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_report(report: dict, out_dir: str | Path) -> Path:
    """Write the three report files into ``out_dir``; return the path of ``report.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    render_plot(report, out / VALUES_PNG)
    _atomic_write(out / REPORT_MD, render_markdown(report).encode("utf-8"))
    _atomic_write(out / REPORT_JSON, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    return out / REPORT_JSON
