"""The report's figures (matplotlib, headless): values and payout, the data signature.

``values.png``, ``signature.png`` and the charts in ``report.html`` are drawn by the same
functions, so a file and the page cannot disagree.
"""

from __future__ import annotations

import io
from pathlib import Path

from common.storage.atomic import atomic_write
from server.report.schema import PUBLIC_FILE_MODE, payout_game, value_kind

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


def draw_values(ax, game: dict) -> None:
    """One game's values as bars with their standard errors (``values.png`` and ``report.html``)."""
    names = list(game["values"])
    values = [game["values"][n]["value"] for n in names]
    errors = [game["values"][n]["stderr"] for n in names]
    colours = ["#2a9d8f" if v >= 0 else "#e76f51" for v in values]
    ax.bar(names, values, yerr=errors if any(errors) else None, color=colours, capsize=3)  # exact: no bars
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title(f"{value_kind(game)} ({game['utility']}, {game['estimator']})")


def render_plot(report: dict, path: Path, mode: int = PUBLIC_FILE_MODE) -> None:
    """Bar chart: Shapley value (with stderr) and payout share per owner, side by side."""
    plt, ticker = pyplot()
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
