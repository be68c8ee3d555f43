"""The report's figures (matplotlib, headless): values and payout, the data signature.

``values.png``, ``signature.png`` and the charts in ``report.html`` are drawn by the same
functions, so a file and the page cannot disagree.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from common.storage.atomic import atomic_write
from server.report.schema import AUDIT_UTILITY_WORDS, PUBLIC_FILE_MODE, payout_game, value_kind, value_unit

PLAIN_TEXT = {"text.parse_math": False}
"""Figures are built under this rc: owner names and run ids are user text, and one with ``$…$``
would otherwise be parsed as mathtext (a bad one makes ``savefig`` raise, losing the report)."""


def pyplot():
    """``(pyplot, ticker)`` on the headless Agg backend: reports are drawn on servers with no screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    return plt, ticker


def png_bytes(fig, plt) -> bytes:
    """The figure as PNG bytes (and closed: pyplot keeps every open figure alive)."""
    buffer = io.BytesIO()
    try:
        with plt.rc_context(PLAIN_TEXT):  # tick labels are made while drawing
            fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def save_figure(fig, plt, path: Path, mode: int = PUBLIC_FILE_MODE) -> None:
    """Write the figure as a PNG atomically (and close it)."""
    atomic_write(path, png_bytes(fig, plt), mode)


RAISES, LOWERS, REJECTED = "#2a9d8f", "#e76f51", "#b0bec5"
"""Bar colours: an owner that raises the utility, one that lowers it, one not valued."""


def draw_values(ax, game: dict, rejected: Sequence[str] = ()) -> None:
    """One game's values as labelled bars in the game's unit, with standard errors when
    estimated, a legend, and ``rejected`` owners as grey "rejected" stubs (``values.png`` and
    ``report.html``)."""
    from matplotlib.patches import Patch

    scale, unit, long_unit = value_unit(game)
    names = list(game["values"])
    values = [game["values"][n]["value"] * scale for n in names]
    errors = [game["values"][n]["stderr"] * scale for n in names]
    colours = [RAISES if v >= 0 else LOWERS for v in values]
    bars = ax.bar(names, values, yerr=errors if any(errors) else None, color=colours, capsize=3)  # exact: no bars
    digits = 1 if scale == 100.0 else 3
    labels = [f"{v:+.{digits}f}" + (f" ± {e:.{digits}f}" if e else "") for v, e in zip(values, errors)]
    ax.bar_label(bars, labels=labels, padding=2, fontsize=8)
    handles = [Patch(color=RAISES, label="raises the utility"), Patch(color=LOWERS, label="lowers it")]
    if rejected:
        stubs = ax.bar(list(rejected), [0.0] * len(rejected), color=REJECTED, hatch="//", edgecolor="#78909c")
        ax.bar_label(stubs, labels=["rejected"] * len(rejected), padding=2, fontsize=8, color="#546e7a")
        handles.append(Patch(facecolor=REJECTED, hatch="//", edgecolor="#78909c", label="rejected: not valued"))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.margins(y=0.18)  # room for the labels above and below the bars
    ax.set_ylabel(f"{value_kind(game)} ({unit})")
    ax.set_xlabel("owner")
    ax.legend(handles=handles, fontsize=8, loc="best", frameon=False)
    how = "exact" if not any(errors) else f"{game['estimator']}, ±1 stderr"
    ax.set_title(f"{value_kind(game)}s: {game['utility']} ({how})\nin {long_unit}", fontsize=10)


def rejected_owners(report: dict) -> list[str]:
    """Owners the report names but did not value (shown as such in every chart)."""
    return [o["name"] for o in report["owners"] if o["status"] != "valued"]


def render_plot(report: dict, path: Path, mode: int = PUBLIC_FILE_MODE) -> None:
    """``values.png``: each owner's value (labelled, in the game's unit) and payout share, side
    by side; rejected owners appear in both, marked rejected."""
    plt, ticker = pyplot()
    game = payout_game(report)
    rejected = rejected_owners(report)
    names = list(game["values"])
    shares = [report["payout"]["shares"].get(n, 0.0) for n in names]
    n = len(names) + len(rejected)
    with plt.rc_context(PLAIN_TEXT):
        fig, (ax_v, ax_s) = plt.subplots(1, 2, figsize=(max(10.0, 2.0 + 1.1 * n), 4.6), constrained_layout=True)
        draw_values(ax_v, game, rejected)
        bars = ax_s.bar(names, shares, color="#264653", label="share of the budget")
        ax_s.bar_label(bars, labels=[f"{s:.1%}" for s in shares], padding=2, fontsize=8)
        if rejected:
            stubs = ax_s.bar(rejected, [0.0] * len(rejected), color=REJECTED, hatch="//", edgecolor="#78909c",
                             label="rejected: not paid")
            ax_s.bar_label(stubs, labels=["rejected"] * len(rejected), padding=2, fontsize=8, color="#546e7a")
        payout = report["payout"]
        ax_s.set_title(f"Payout share ({payout['policy']} policy, budget {payout['budget']:g})", fontsize=10)
        ax_s.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
        ax_s.set_ylabel("share of the budget")
        ax_s.set_xlabel("owner")
        ax_s.margins(y=0.15)
        ax_s.legend(fontsize=8, loc="best", frameon=False)
        for ax in (ax_v, ax_s):
            ax.tick_params(axis="x", rotation=30)
        fig.suptitle(f"FairPool run {report['run_id']}")
    save_figure(fig, plt, path, mode)


def render_signature(report: dict, path: Path, mode: int = PUBLIC_FILE_MODE) -> None:
    """The data signature, as ``signature.png``."""
    plt, _ = pyplot()
    save_figure(signature_figure(report, plt), plt, path, mode)


def signature_figure(report: dict, plt):
    """The data signature: each owner as a point (value in game 1, value in game 2).

    One figure for both ``signature.png`` and ``report.html``, so the two cannot disagree.
    """
    first, second = report["games"][:2]
    names = [n for n in first["values"] if n in second["values"]]
    x = [first["values"][n]["value"] for n in names]
    y = [second["values"][n]["value"] for n in names]
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


def audit_png(report: dict) -> bytes:
    """``audit.png``: each audited coalition's arithmetic utility against its really retrained
    one, one panel per utility, with the diagonal where they would agree exactly. Points carry
    the coalition's number in the report's audit table (names would overlap)."""
    plt, _ticker = pyplot()
    audit = report["audit"]
    rows = audit["coalitions"]
    utilities = list(audit.get("utilities") or rows[0]["arithmetic"])
    with plt.rc_context(PLAIN_TEXT):
        fig, axes = plt.subplots(1, len(utilities), figsize=(5.0 * len(utilities), 5.0), constrained_layout=True,
                                 squeeze=False)
        for ax, utility in zip(axes[0], utilities):
            words = AUDIT_UTILITY_WORDS.get(utility, utility)
            x = [r["retrained"][utility] for r in rows]
            y = [r["arithmetic"][utility] for r in rows]
            low, high = min(x + y), max(x + y)
            pad = (high - low) * 0.08 or 0.01
            ax.plot([low - pad, high + pad], [low - pad, high + pad], color="#9e9e9e", linestyle="--",
                    linewidth=1, label="arithmetic = retrained")
            ax.scatter(x, y, color="#264653", zorder=3, label="audited coalition (its # in the table)")
            for number, (xi, yi) in enumerate(zip(x, y), start=1):
                ax.annotate(str(number), (xi, yi), textcoords="offset points", xytext=(5, -3), fontsize=8)
            ax.set_xlim(low - pad, high + pad)
            ax.set_ylim(low - pad, high + pad)
            ax.set_aspect("equal")
            ax.set_xlabel(f"retrained by sequential DPO ({words})")
            ax.set_ylabel(f"arithmetic, as valued ({words})")
            stats = audit.get("agreement", {}).get(utility, {})
            told = "" if stats.get("pearson") is None else f"Pearson {stats['pearson']:.2f}, "
            ax.set_title(f"{words}: {told}max error {stats.get('max_abs_error', 0):.4f}", fontsize=10)
            ax.legend(fontsize=8, loc="best")
        fig.suptitle(f"Audit: arithmetic against really retrained coalitions (run {report['run_id']})", fontsize=11)
    return png_bytes(fig, plt)


def render_audit(report: dict, path: Path, mode: int = PUBLIC_FILE_MODE) -> None:
    """Write :func:`audit_png` to ``path``."""
    atomic_write(path, audit_png(report), mode)
