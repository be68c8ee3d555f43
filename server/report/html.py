"""``report.html``: the run's report as one self-contained page.

Why one file with nothing to fetch: a payout report is mailed, archived and opened long after
the run, often offline; a page that needs a CDN, a web font or an image URL changes or breaks
when those do.  So the charts are PNGs embedded as ``data:`` URIs, the CSS is inline, there
is no script at all, and a Content-Security-Policy forbids loading anything else.

Owner names, run ids and paths are user text: every one goes through :func:`html.escape`
before it reaches the page (an owner called ``<script>…`` stays text), and the figures are
built with mathtext off (:data:`server.report.figures.PLAIN_TEXT`).

The page is derived from the report dict alone (the schema of docs/report.md), so it can be
regenerated from any ``report.json``: ``render_html(json.loads(path.read_text()))``.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping

import numpy as np

from common.status import OwnerStatus
from server.report.figures import (
    PLAIN_TEXT,
    audit_png,
    draw_values,
    png_bytes,
    pyplot,
    rejected_owners,
    signature_figure,
)
from server.report.markdown import evaluated
from server.report.schema import (
    AUDIT_UTILITY_WORDS,
    advice_sentences,
    audit_summary,
    examples_cell,
    format_with_unit,
    is_exact,
    owner_flags,
    payout_game,
    plain_reading,
    rows_account,
    utility_level,
    value_kind,
    value_unit,
)

OWNERS_IN_HEADER = 20
"""The header names at most this many owners; the payout table always lists all of them."""

BANDS_MAX_OWNERS = 8
"""The convergence plot shades ±1 stderr bands only up to this many owners."""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""Nothing but inline styles and ``data:`` images may load, even if some text slipped through."""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2b36;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #264653; padding-bottom: 0.2em; margin-top: 2em; }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: 0.25em 1.2em; }
dl.summary dt { font-weight: 600; color: #264653; }
dl.summary dd { margin: 0; overflow-wrap: anywhere; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.9em;
       background: #f1f4f6; padding: 0 0.25em; border-radius: 3px; overflow-wrap: anywhere; }
.signature { border: 1px solid #2a9d8f; background: #eef8f6; padding: 0.6em 1em; border-radius: 6px; }
table { border-collapse: collapse; margin: 1em 0; min-width: 60%; }
th, td { border: 1px solid #cfd8dc; padding: 0.35em 0.7em; text-align: left; }
th { background: #264653; color: #fff; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.rejected td { color: #78909c; background: #f7f7f7; }
tr.flagged td { background: #fdf0ec; }
.flag { color: #c0392b; font-weight: 600; display: block; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e0e6ea; }
figcaption { color: #546e7a; font-size: 0.92em; max-width: 900px; }
p.reading { font-size: 1.08em; background: #f6f9fa; border-left: 4px solid #2a9d8f; padding: 0.7em 1em; }
details > summary { cursor: pointer; color: #264653; font-weight: 600; margin: 0.6em 0; }
"""


def _e(value: object) -> str:
    """Text for the page: every user-provided string is escaped, quotes included (attributes)."""
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _figure(png: bytes, alt: str, caption: str) -> str:
    """A chart with its caption; ``caption`` is already HTML."""
    return f"<figure>{_img(png, alt)}<figcaption>{caption}</figcaption></figure>"


# --------------------------------------------------------------------------- figures


def game_values_png(game: dict, rejected: list[str] | None = None) -> bytes:
    """One game's values, labelled, in its unit, with standard-error bars when estimated and
    ``rejected`` owners marked (the same bars as ``values.png``)."""
    plt, _ = pyplot()
    rejected = rejected or []
    names = [*game["values"], *rejected]  # long names end under their bar
    n = len(names)
    with plt.rc_context(PLAIN_TEXT):
        fig, ax = plt.subplots(figsize=(min(max(6.0, 2.0 + 0.55 * n), 20.0), 4.4), constrained_layout=True)
        draw_values(ax, game, rejected)
        ax.set_xticks(range(n), names, rotation=30, horizontalalignment="right", rotation_mode="anchor")
    return png_bytes(fig, plt)


def signature_png(report: dict) -> bytes:
    """``signature.png``'s figure (:func:`server.report.figures.signature_figure`), as bytes."""
    plt, _ = pyplot()
    return png_bytes(signature_figure(report, plt), plt)


def utilities_by_size(game: dict) -> list[list[float]]:
    """Row ``k``: the utilities of the listed coalitions of size ``k``, ascending (k = 0..n)."""
    n = len(game["values"])
    rows: list[list[float]] = [[] for _ in range(n + 1)]
    for coalition in game["coalitions"]:
        rows[len(coalition["members"])].append(float(coalition["value"]))
    return [sorted(row) for row in rows]


def quantile_grid(rows: list[list[float]]) -> np.ndarray:
    """Rows stretched to a common width: cell ``j`` of a row of ``m`` values is its value
    ``⌊(j + ½)·m / W⌋``, so every cell is a real coalition's utility and each row reads as
    that size's sorted spread; a size with no listed coalition is a row of NaN."""
    width = max((len(r) for r in rows), default=0) or 1
    grid = np.full((len(rows), width), np.nan)
    for k, row in enumerate(rows):
        if row:
            index = ((np.arange(width) + 0.5) * len(row) / width).astype(int)
            grid[k] = np.asarray(row)[index]
    return grid


def heatmap_png(game: dict) -> bytes:
    """Coalition utilities by coalition size: one row per size, sorted, mean and count on the right."""
    plt, ticker = pyplot()
    from matplotlib.transforms import blended_transform_factory

    rows = utilities_by_size(game)
    grid = quantile_grid(rows)
    n = len(rows) - 1
    with plt.rc_context(PLAIN_TEXT):
        fig, ax = plt.subplots(figsize=(9.5, min(max(2.6, 1.4 + 0.32 * (n + 1)), 14.0)), constrained_layout=True)
        cmap = plt.get_cmap("viridis").with_extremes(bad="#e6e6e6")
        image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, origin="lower",
                          interpolation="nearest", extent=(0.0, 1.0, -0.5, n + 0.5))
        ax.xaxis.set_major_formatter(ticker.PercentFormatter(1.0))
        ax.set_xlabel("coalitions of that size, sorted by utility (lowest → highest)")
        ax.set_ylabel("coalition size (members)")
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True, nbins=min(n + 1, 25)))
        label = blended_transform_factory(ax.transAxes, ax.transData)
        size = 8 if n < 20 else 6
        for k, row in enumerate(rows):
            text = f"mean {np.mean(row):.4f} ({len(row)} listed)" if row else "none listed"
            ax.text(1.02, k, text, transform=label, va="center", fontsize=size)
        bar = fig.colorbar(image, ax=ax, pad=0.2)
        bar.set_label(f"utility ({game['metric']})")
        ax.set_title(f"Coalition utilities by size: {game['utility']}")
    return png_bytes(fig, plt)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def trace_series(game: dict) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """``game["trace"]`` as arrays: evaluations, each owner's value and, when every snapshot
    carries one, each owner's stderr.  A snapshot is ``{"evaluations": int, "values": {NAME:
    float}}`` with an optional ``"stderr": {NAME: float}``; a missing owner or a ``null`` (how
    JSON-safe writers spell a non-finite number) is NaN."""
    trace = game["trace"]
    names = list(game["values"])
    evaluations = np.array([int(s["evaluations"]) for s in trace], dtype=np.int64)
    values = {n: np.array([_number(s["values"].get(n)) for s in trace]) for n in names}
    stderr = None
    if trace and all("stderr" in s for s in trace):
        stderr = {n: np.array([_number(s["stderr"].get(n)) for s in trace]) for n in names}
    return evaluations, values, stderr


def convergence_png(game: dict) -> bytes:
    """Each owner's running estimate against the utilities requested, ±1 stderr when traced
    (for up to :data:`BANDS_MAX_OWNERS` owners: beyond that the bands hide the lines)."""
    plt, _ = pyplot()
    evaluations, values, stderr = trace_series(game)
    n = len(values)
    with plt.rc_context(PLAIN_TEXT):
        fig, ax = plt.subplots(figsize=(9.5, 4.5), constrained_layout=True)
        colours = plt.get_cmap("tab10" if n <= 10 else "tab20")
        marker = "o" if len(evaluations) <= 30 else None
        for i, (name, series) in enumerate(values.items()):
            colour = colours(i % colours.N)
            ax.plot(evaluations, series, marker=marker, markersize=3, color=colour, label=name)
            if stderr is not None and n <= BANDS_MAX_OWNERS:
                spread = np.where(np.isfinite(stderr[name]), stderr[name], np.nan)
                ax.fill_between(evaluations, series - spread, series + spread, color=colour, alpha=0.15,
                                linewidth=0)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xlabel("coalition utilities requested")
        ax.set_ylabel(value_kind(game))
        ax.set_title(f"Convergence of the {game['estimator']} estimate: {game['utility']}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, ncols=max(1, math.ceil(n / 22)),
                  frameon=False)
    return png_bytes(fig, plt)


# --------------------------------------------------------------------------- sections


def _dl(items: Iterable[tuple[str, str]]) -> str:
    """A definition list; values are already HTML."""
    body = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f'<dl class="summary">{body}</dl>'


def _owners_line(owners: list[dict]) -> str:
    valued = sum(o["status"] == OwnerStatus.VALUED for o in owners)
    names = ", ".join(_e(o["name"]) for o in owners[:OWNERS_IN_HEADER])
    more = f" … and {len(owners) - OWNERS_IN_HEADER} more" if len(owners) > OWNERS_IN_HEADER else ""
    return f"{len(owners)} ({valued} valued, {len(owners) - valued} rejected): {names}{more}"


def header(report: dict) -> str:
    """Run id, owners, the settings that make the run reproducible, and the signature if any."""
    settings = report.get("settings", {})
    payout = report["payout"]
    items = [
        ("Run", f"<code>{_e(report['run_id'])}</code>"),
        ("Owners", _owners_line(report["owners"])),
        ("Base model", f"<code>{_e(settings.get('base_model', '?'))}</code>"),
        ("Base fingerprint", f"<code>{_e(settings.get('base_fingerprint', '?'))}</code>"),
        ("Training spec digest", f"<code>{_e(settings.get('spec_sha256', '?'))}</code>"),
        ("Composition", _e(settings.get("composition", "?"))),
        ("Games", ", ".join(f"<code>{_e(g['utility'])}</code> ({_e(g['estimator'])})" for g in report["games"])),
        ("Payout", f"{_e(payout['policy_description'])} Budget {payout['budget']:g} from the "
                   f"<code>{_e(payout['game'])}</code> game."),
    ]
    parts = [f"<header><h1>FairPool valuation report</h1><p class=\"reading\">{_e(plain_reading(report))}</p>"
             f"{_dl(items)}"]
    signature = report.get("signature")
    if isinstance(signature, Mapping) and signature.get("fingerprint"):
        parts.append(f'<p class="signature">Signed by key <code>{_e(signature["fingerprint"])}</code>: '
                     "check the signature of <code>report.json</code>; this page is derived from it.</p>")
    parts.append("</header>")
    return "".join(parts)


def payout_table(report: dict) -> str:
    """One row per owner (rejected ones included), then the reasons for each rejection."""
    payout = report["payout"]
    game = payout_game(report)
    spread = "" if is_exact(game) else " ± stderr"
    head = ["owner", "status", "examples", f"{value_kind(game)}{spread} ({game['utility']}, {value_unit(game)[1]})",
            "share", "amount", "flagged"]
    rows = []
    for owner in report["owners"]:
        name = owner["name"]
        share, amount = payout["shares"].get(name), payout["amounts"].get(name)
        flagged = name in payout["flagged"]
        css = "rejected" if owner["status"] == OwnerStatus.REJECTED else ("flagged" if flagged else "valued")
        cells = [
            f"<td>{_e(name)}</td>",
            f"<td>{_e(owner['status'])}</td>",
            f'<td class="num">{_e(examples_cell(owner))}</td>',
            f'<td class="num">{_e(format_with_unit(game, game["values"].get(name)))}</td>',
            f'<td class="num">{"—" if share is None else _e(f"{share:.1%}")}</td>',
            f'<td class="num">{"—" if amount is None else _e(f"{amount:.2f}")}</td>',
            f'<td>{"".join(f"<span class=flag>⚑ {_e(f)}</span> " for f in owner_flags(report, name))}</td>',
        ]
        rows.append(f'<tr class="{css}">{"".join(cells)}</tr>')
    th = "".join(f'<th scope="col">{_e(h)}</th>' for h in head)
    parts = ['<section id="payout"><h2>Payout</h2>',
             f'<table class="payout"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table>']
    trimmed = [o for o in report["owners"] if rows_account(o)]
    if trimmed:
        items = "".join(f"<li><strong>{_e(o['name'])}</strong>: {_e(rows_account(o))}</li>" for o in trimmed)
        parts.append(f'<h3>Rows not used as given</h3><ul class="rows">{items}</ul>')
    rejected = [o for o in report["owners"] if o["status"] == OwnerStatus.REJECTED]
    if rejected:
        items = "".join(f"<li><strong>{_e(o['name'])}</strong>: {_e(o['reason'])}</li>" for o in rejected)
        parts.append(f'<h3>Rejected owners</h3><ul class="rejected">{items}</ul>')
    flags = report.get("flags", [])
    if flags:
        items = "".join(f"<li><strong>{_e(' and '.join(f['owners']))}</strong>: cosine similarity "
                        f"{float(f['cosine']):.4f}. {_e(f.get('note', ''))}</li>" for f in flags)
        parts.append(f'<h3>Flagged: near-identical adapters</h3><ul class="flags">{items}</ul>')
    refused = report.get("refused", [])
    if refused:
        items = "".join(f"<li><strong>{_e(r['owner'])}</strong>: {_e(r['reason'])}</li>" for r in refused)
        parts.append(f'<h3>Refused replies (not players)</h3><ul class="refused">{items}</ul>')
    parts.append("</section>")
    return "".join(parts)


def coalition_table(game: dict) -> str:
    """Every listed coalition with its members, size and utility, folded under the heat map:
    the heat map's cells named, with no script (the page has none)."""
    scale, _, long_unit = value_unit(game)
    rows = sorted(game["coalitions"], key=lambda r: (len(r["members"]), -float(r["value"]), r["members"]))
    body = "".join(f"<tr><td>{_e(', '.join(r['members']) or '∅ (the base model)')}</td>"
                   f'<td class="num">{len(r["members"])}</td>'
                   f'<td class="num">{_e(utility_level(game, float(r["value"]), unit=False))}</td></tr>'
                   for r in rows)
    what = "held-out preference accuracy" if scale == 100.0 else long_unit
    return (f"<details><summary>Every listed coalition ({len(rows)}): members, size and utility</summary>"
            f'<table class="coalitions"><thead><tr><th scope="col">coalition</th><th scope="col">size</th>'
            f'<th scope="col">utility ({_e(what)})</th></tr></thead><tbody>{body}</tbody></table></details>')


def game_section(index: int, game: dict, rejected: list[str] | None = None) -> str:
    """How one game was computed, its values, its convergence (if traced) and its coalitions."""
    total = sum(v["value"] for v in game["values"].values())
    summary = (f"{_e(game['metric'])} on {_e(evaluated(game))}, composition <strong>{_e(game['composition'])}"
               f"</strong>, estimator <strong>{_e(game['estimator'])}</strong> giving {_e(value_kind(game))}s "
               f"({_e(game['status'])}, "
               f"{_e(game['evaluations'])} coalition utilities computed). v(∅) = {game['empty']:.4f}, "
               f"v(N) = {game['grand']:.4f}; values sum to {total:+.4f} "
               f"(v(N) − v(∅) = {game['grand'] - game['empty']:+.4f}).")
    name = _e(game["utility"])
    advice = "".join(f"<li>{_e(sentence)}</li>" for sentence in advice_sentences(game))
    parts = [f'<section class="game" id="game-{index}"><h2>Game <code>{name}</code></h2><p>{summary}</p>'
             + (f'<h3>Data-mix advice</h3><ul class="advice">{advice}</ul>' if advice else ""),
             _figure(game_values_png(game, rejected), f"{value_kind(game)}s of the {game['utility']} game",
                     f"{_e(value_kind(game))} of each owner, in {_e(value_unit(game)[2])}; "
                     + ("computed exactly, so there are no error bars." if is_exact(game)
                        else "error bars are ±1 standard error of the estimate.")
                     + (" Rejected owners are marked and were not valued." if rejected else ""))]
    if game.get("trace"):
        parts.append(_figure(convergence_png(game), f"convergence of the {game['utility']} estimate",
                             "Each owner's running estimate as the sampler requested more coalition "
                             f"utilities; shaded bands are ±1 standard error where recorded (up to "
                             f"{BANDS_MAX_OWNERS} owners)."))
    omitted = game.get("coalitions_omitted", 0)
    note = (f" {_e(omitted)} further evaluated coalitions are not listed in the report and not shown "
            "(only ∅, singletons, leave-one-out and the grand coalition are kept)." if omitted else "")
    parts.append(_figure(heatmap_png(game), f"coalition utilities of the {game['utility']} game by size",
                         "Each row is one coalition size; its listed coalitions are sorted by utility from "
                         "left to right and stretched to the full width, so a row shows the spread of "
                         "utilities at that size. The right margin gives each size's mean utility and how "
                         f"many coalitions it lists; grey rows list none. The table below names every "
                         f"coalition.{note}"))
    parts.append(coalition_table(game))
    parts.append("</section>")
    return "".join(parts)


def signature_section(report: dict) -> str:
    first, second = report["games"][:2]
    caption = (f"Each owner as a point: value in the <code>{_e(first['utility'])}</code> game against value "
               f"in the <code>{_e(second['utility'])}</code> game, with ±1 standard-error bars.")
    return ('<section id="signature"><h2>Data signature</h2>'
            + _figure(signature_png(report), "data signature of each owner", caption) + "</section>")


def audit_section(report: dict) -> str:
    """Arithmetic against really retrained coalitions (``--audit``): the summary, the scatter
    plot and the per-coalition table."""
    audit = report["audit"]
    parts = ['<section id="audit"><h2>Audit: arithmetic against really retrained coalitions</h2>',
             f"<p>{_e(audit_summary(audit))}</p>"]
    rows = audit.get("coalitions", [])
    if rows:
        utilities = list(audit.get("utilities") or rows[0]["arithmetic"])
        parts.append(_figure(audit_png(report), "arithmetic against retrained utility of each audited coalition",
                             "One point per audited coalition: its utility by arithmetic on the owners' adapters "
                             "(what the valuation used) against the utility of the model the owners really "
                             "retrained by sequential DPO, numbered as in the table below. On the dashed line "
                             "they agree exactly."))
        head = "".join(f'<th scope="col">{_e(AUDIT_UTILITY_WORDS.get(u, u))}: arithmetic</th>'
                       f'<th scope="col">retrained</th><th scope="col">error</th>' for u in utilities)
        body = "".join(f'<tr><td class="num">{number}</td><td>' + _e(" + ".join(r["members"])) + "</td>"
                       + "".join(f'<td class="num">{r["arithmetic"][u]:.4f}</td><td class="num">'
                                 f'{r["retrained"][u]:.4f}</td><td class="num">{r["error"][u]:+.4f}</td>'
                                 for u in utilities) + "</tr>" for number, r in enumerate(rows, start=1))
        parts.append(f'<table class="audit"><thead><tr><th scope="col">#</th><th scope="col">coalition</th>'
                     f"{head}</tr></thead><tbody>{body}</tbody></table>")
    skipped = audit.get("skipped", [])
    if skipped:
        parts.append("<ul>" + "".join(f"<li>not retrained: <strong>{_e(' + '.join(s['members']))}</strong>: "
                                      f"{_e(s['reason'])}</li>" for s in skipped) + "</ul>")
    parts.append("</section>")
    return "".join(parts)


def digests_section(report: dict) -> str:
    """The digests an auditor compares against what owners sent (folded: long and rarely read)."""
    rows = "".join(f"<tr><td>{_e(o['name'])}</td><td><code>{_e(o['adapter_sha256'])}</code></td></tr>"
                   for o in report["owners"] if o.get("adapter_sha256"))
    if not rows:
        return ""
    return ('<section id="digests"><details><summary>Adapter digests (sha256)</summary>'
            f'<table><thead><tr><th scope="col">owner</th><th scope="col">adapter sha256</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></details></section>")


def render_html(report: dict) -> str:
    """The whole page for ``report`` (schema: docs/report.md)."""
    body = [header(report), payout_table(report)]
    body += [game_section(i, g, rejected_owners(report)) for i, g in enumerate(report["games"])]
    if len(report["games"]) >= 2:
        body.append(signature_section(report))
    if "audit" in report:
        body.append(audit_section(report))
    body.append(digests_section(report))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>FairPool report — run {_e(report['run_id'])}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
