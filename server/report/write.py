"""Writing a run's report: ``report.json`` (the contract), ``report.md``, ``report.html``
(self-contained, :mod:`server.report.html`), ``values.png`` and, with two or more games,
``signature.png``.

Every file is written to a temporary name and renamed into place, and ``report.json`` goes
last: a reader that finds ``report.json`` finds a complete report.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from common.trust.signing import report_file_bytes

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
VALUES_PNG = "values.png"
SIGNATURE_PNG = "signature.png"
REPORT_HTML = "report.html"


PRIVATE_FILE_MODE = 0o600
"""Report files by default: they hold every owner's payout; owners get theirs from `fairpool serve`."""
PUBLIC_FILE_MODE = 0o644
"""With ``--public-report`` (and for study outputs, which name no payouts): readable by everyone."""


def _atomic_write(path: Path, data: bytes, mode: int = PUBLIC_FILE_MODE) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    mkstemp creates the file 0600; it gets ``mode`` before it is renamed into place.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def payout_game(report: dict) -> dict:
    """The game the payout is computed from."""
    return next(g for g in report["games"] if g["utility"] == report["payout"]["game"])


def _fmt_value(value: dict | None) -> str:
    if not value:
        return "—"
    text = f"{value['shapley']:+.4f}"
    return text + (f" ± {value['stderr']:.4f}" if value.get("stderr") else "")


def render_markdown(report: dict) -> str:
    """A human summary: the owner table first, then each game and how it was computed."""
    games = report["games"]
    payout = report["payout"]
    header = "| owner | examples | status | " + " | ".join(f"{g['utility']} value" for g in games)
    lines = [
        f"# FairPool valuation report — run `{report['run_id']}`",
        "",
        f"Payout from the **{payout['game']}** game: {payout['policy_description']} Budget: {payout['budget']:g}.",
        "",
        header + " | payout share | amount |",
        "|---|---:|---|" + "---:|" * len(games) + "---:|---:|",
    ]
    for owner in report["owners"]:
        name = owner["name"]
        share, amount = payout["shares"].get(name), payout["amounts"].get(name)
        status = owner["status"] + (" ⚑ negative" if name in payout["flagged"] else "")
        if owner.get("source") == "adapter":
            status += " (existing adapter)"
        values = " | ".join(_fmt_value(g["values"].get(name)) for g in games)
        lines.append(
            f"| {name} | {owner['num_examples'] or '—'} | {status} | {values} | "
            f"{'—' if share is None else f'{share:.1%}'} | {'—' if amount is None else f'{amount:.2f}'} |"
        )
    rejected = [o for o in report["owners"] if o["status"] == "rejected"]
    if rejected:
        lines += ["", "## Rejected owners", ""]
        lines += [f"- **{o['name']}**: {o['reason']}" for o in rejected]
    if report.get("flags"):
        lines += ["", "## Flagged: near-identical adapters", ""]
        lines += [f"- **{' and '.join(f['owners'])}**: cosine {f['cosine']:.4f}. {f.get('note', '')}"
                  for f in report["flags"]]
    if report.get("refused"):
        lines += ["", "## Refused replies (not players)", ""]
        lines += [f"- **{r['owner']}**: {r['reason']}" for r in report["refused"]]
    for game in games:
        lines += _game_section(game)
    settings = report.get("settings", {})
    lines += ["", "## Settings", "", f"- base model: `{settings.get('base_model', '?')}`",
              f"- base fingerprint: `{settings.get('base_fingerprint', '')[:16]}…`",
              f"- training spec digest: `{settings.get('spec_sha256', '')[:16]}…`"]
    for owner in report["owners"]:
        if owner["adapter_sha256"]:
            lines.append(f"- adapter of {owner['name']}: sha256 `{owner['adapter_sha256']}`")
    return "\n".join(lines) + "\n"


MD_COALITION_ROWS = 64


def _evaluated(game: dict) -> str:
    if "num_eval_prompts" in game:
        decoding = game.get("decoding", {})
        how = "greedy" if not decoding.get("temperature") else f"temperature {decoding['temperature']}"
        return (f"generations for {game['num_eval_prompts']} prompts ({how}, "
                f"at most {decoding.get('max_new_tokens', '?')} new tokens)")
    return f"{game['num_eval_pairs']} held-out pairs"


def _game_section(game: dict) -> list[str]:
    efficiency = sum(v["shapley"] for v in game["values"].values())
    lines = [
        "", f"## Game `{game['utility']}`", "",
        f"{game['metric']} on {_evaluated(game)}, composition **{game['composition']}**, "
        f"estimator **{game['estimator']}** ({game['status']}, {game['evaluations']} coalition utilities computed).",
        f"v(∅) = {game['empty']:.4f}, v(N) = {game['grand']:.4f}; values sum to {efficiency:+.4f} "
        f"(v(N) − v(∅) = {game['grand'] - game['empty']:+.4f}).",
        "", "| coalition | utility |", "|---|---:|",
    ]
    rows = sorted(game["coalitions"], key=lambda r: (len(r["members"]), r["members"]))
    for row in rows[:MD_COALITION_ROWS]:
        lines.append(f"| {', '.join(row['members']) or '∅ (base model)'} | {row['value']:.4f} |")
    hidden = len(rows) - MD_COALITION_ROWS + game.get("coalitions_omitted", 0)
    if hidden > 0:
        lines.append(f"| … {hidden} more coalitions (see report.json) | |")
    return lines


def render_plot(report: dict, path: Path, mode: int = PUBLIC_FILE_MODE) -> None:
    """Bar chart: Shapley value (with stderr) and payout share per owner, side by side."""
    plt, ticker = _pyplot()
    game = payout_game(report)
    names = list(game["values"])
    shares = [report["payout"]["shares"].get(n, 0.0) for n in names]
    with plt.rc_context(PLAIN_TEXT):
        fig, (ax_v, ax_s) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        draw_values(ax_v, game)
        ax_s.bar(names, shares, color="#264653")
        ax_s.set_title(f"Payout share ({report['payout']['policy']} policy)")
        ax_s.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
        for ax in (ax_v, ax_s):
            ax.tick_params(axis="x", rotation=30)
        fig.suptitle(f"FairPool run {report['run_id']}")
    _save(fig, plt, path, mode)


PLAIN_TEXT = {"text.parse_math": False}
"""Figures are built under this rc: owner names and run ids are user text, and one with ``$…$``
would otherwise be parsed as mathtext (a bad one makes ``savefig`` raise, losing the report)."""


def value_kind(game: dict) -> str:
    """What a game's values are: Banzhaf and leave-one-out values are not Shapley values."""
    return {"banzhaf": "Banzhaf value", "loo": "leave-one-out value"}.get(game["estimator"], "Shapley value")


def draw_values(ax, game: dict) -> None:
    """One game's values as bars with their standard errors (``values.png`` and ``report.html``)."""
    names = list(game["values"])
    values = [game["values"][n]["shapley"] for n in names]
    errors = [game["values"][n]["stderr"] for n in names]
    colours = ["#2a9d8f" if v >= 0 else "#e76f51" for v in values]
    ax.bar(names, values, yerr=errors if any(errors) else None, color=colours, capsize=3)  # exact: no bars
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title(f"{value_kind(game)} ({game['utility']}, {game['estimator']})")


def render_signature(report: dict, path: Path, mode: int = PUBLIC_FILE_MODE) -> None:
    """The data signature, as ``signature.png``."""
    plt, _ = _pyplot()
    _save(signature_figure(report, plt), plt, path, mode)


def signature_figure(report: dict, plt):
    """The data signature: each owner as a point (value in game 1, value in game 2).

    One figure for both ``signature.png`` and ``report.html``, so the two cannot disagree.
    """
    first, second = report["games"][:2]
    names = [n for n in first["values"] if n in second["values"]]
    x = [first["values"][n]["shapley"] for n in names]
    y = [second["values"][n]["shapley"] for n in names]
    with plt.rc_context(PLAIN_TEXT):
        fig, ax = plt.subplots(figsize=(6, 5), constrained_layout=True)
        ax.errorbar(x, y, xerr=[first["values"][n]["stderr"] for n in names],
                    yerr=[second["values"][n]["stderr"] for n in names], fmt="o", color="#264653", capsize=3)
        for name, xi, yi in zip(names, x, y):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(5, 5))
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_xlabel(f"{value_kind(first)}: {first['utility']}")
        ax.set_ylabel(f"{value_kind(second)}: {second['utility']}")
        ax.set_title("Data signature of each owner")
    return fig


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    return plt, ticker


def _png_bytes(fig, plt) -> bytes:
    """The figure as PNG bytes (and closed: pyplot keeps every open figure alive)."""
    buffer = io.BytesIO()
    try:
        with plt.rc_context(PLAIN_TEXT):  # tick labels are made while drawing
            fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _save(fig, plt, path: Path, mode: int = PUBLIC_FILE_MODE) -> None:
    _atomic_write(path, _png_bytes(fig, plt), mode)


def write_report(report: dict, out_dir: str | Path, *, public: bool = False) -> Path:
    """Write the report files into ``out_dir``; return the path of ``report.json``.

    They are 0600 unless ``public`` (``--public-report``): the report lists every owner's share,
    and each owner fetches its own copy from ``fairpool serve`` or is sent it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mode = PUBLIC_FILE_MODE if public else PRIVATE_FILE_MODE
    render_plot(report, out / VALUES_PNG, mode)
    if len(report["games"]) >= 2:
        render_signature(report, out / SIGNATURE_PNG, mode)
    _atomic_write(out / REPORT_MD, render_markdown(report).encode("utf-8"), mode)
    from server.report.html import render_html  # here, not at the top: report_html imports this module

    _atomic_write(out / REPORT_HTML, render_html(report).encode("utf-8"), mode)
    _atomic_write(out / REPORT_JSON, report_file_bytes(report), mode)
    return out / REPORT_JSON
