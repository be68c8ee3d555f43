"""``report.md``: the report as a human summary (the owner table first, then each game)."""

from __future__ import annotations

from common.status import OwnerStatus
from server.report.schema import (
    AUDIT_PNG,
    AUDIT_UTILITY_WORDS,
    advice_sentences,
    audit_summary,
    examples_cell,
    format_with_unit,
    owner_flags,
    payout_game,
    plain_reading,
    rows_account,
    value_kind,
    value_unit,
)


def render_markdown(report: dict) -> str:
    """A human summary: the owner table first, then each game and how it was computed."""
    games = report["games"]
    payout = report["payout"]
    header = "| owner | examples | status | " + " | ".join(
        f"{g['utility']}: {value_kind(g)} ({value_unit(g)[1]})" for g in games)
    lines = [
        f"# FairPool valuation report — run `{report['run_id']}`",
        "",
        plain_reading(report),
        "",
        f"Payout from the **{payout['game']}** game's {value_kind(payout_game(report))}s: "
        f"{payout['policy_description']} Budget: {payout['budget']:g}.",
        "",
        header + " | payout share | amount | flagged |",
        "|---|---:|---|" + "---:|" * len(games) + "---:|---:|---|",
    ]
    for owner in report["owners"]:
        name = owner["name"]
        share, amount = payout["shares"].get(name), payout["amounts"].get(name)
        status = owner["status"]
        if owner.get("source") == "adapter":
            status += " (existing adapter)"
        values = " | ".join(format_with_unit(g, g["values"].get(name)) for g in games)
        lines.append(
            f"| {name} | {examples_cell(owner)} | {status} | {values} | "
            f"{'—' if share is None else f'{share:.1%}'} | {'—' if amount is None else f'{amount:.2f}'} | "
            f"{'; '.join('⚑ ' + f for f in owner_flags(report, name))} |"
        )
    trimmed = [o for o in report["owners"] if rows_account(o)]
    if trimmed:
        lines += ["", "## Rows not used as given", ""]
        lines += [f"- **{o['name']}**: {rows_account(o)}" for o in trimmed]
    rejected = [o for o in report["owners"] if o["status"] == OwnerStatus.REJECTED]
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
    if "audit" in report:
        lines += _audit_section(report["audit"])
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


def evaluated(game: dict) -> str:
    if "num_eval_prompts" in game:
        decoding = game.get("decoding", {})
        how = "greedy" if not decoding.get("temperature") else f"temperature {decoding['temperature']}"
        return (f"generations for {game['num_eval_prompts']} prompts ({how}, "
                f"at most {decoding.get('max_new_tokens', '?')} new tokens)")
    return f"{game['num_eval_pairs']} held-out pairs"


def _game_section(game: dict) -> list[str]:
    efficiency = sum(v["value"] for v in game["values"].values())
    lines = [
        "", f"## Game `{game['utility']}`", "",
        f"{game['metric']} on {evaluated(game)}, composition **{game['composition']}**, "
        f"estimator **{game['estimator']}** giving {value_kind(game)}s ({game['status']}, "
        f"{game['evaluations']} coalition utilities computed).",
        f"v(∅) = {game['empty']:.4f}, v(N) = {game['grand']:.4f}; values sum to {efficiency:+.4f} "
        f"(v(N) − v(∅) = {game['grand'] - game['empty']:+.4f}).",
    ]
    if advice_sentences(game):
        lines += ["", "**Data-mix advice.** " + " ".join(advice_sentences(game))]
    lines += ["", "| coalition | utility |", "|---|---:|"]
    rows = sorted(game["coalitions"], key=lambda r: (len(r["members"]), r["members"]))
    for row in rows[:MD_COALITION_ROWS]:
        lines.append(f"| {', '.join(row['members']) or '∅ (base model)'} | {row['value']:.4f} |")
    hidden = len(rows) - MD_COALITION_ROWS + game.get("coalitions_omitted", 0)
    if hidden > 0:
        lines.append(f"| … {hidden} more coalitions (see report.json) | |")
    return lines


def _audit_section(audit: dict) -> list[str]:
    """Arithmetic against really retrained coalitions (``--audit``), one row per coalition."""
    lines = ["", "## Audit: arithmetic against really retrained coalitions", "", audit_summary(audit)]
    rows = audit.get("coalitions", [])
    if rows:
        utilities = list(audit.get("utilities") or rows[0]["arithmetic"])
        lines += ["", f"![arithmetic against retrained utility]({AUDIT_PNG})", "",
                  "| # | coalition | " + " | ".join(f"{AUDIT_UTILITY_WORDS.get(u, u)}: arithmetic | retrained | error"
                                                for u in utilities) + " |",
                  "|---:|---|" + "---:|---:|---:|" * len(utilities)]
        for number, row in enumerate(rows, start=1):
            cells = " | ".join(f"{row['arithmetic'][u]:.4f} | {row['retrained'][u]:.4f} | {row['error'][u]:+.4f}"
                               for u in utilities)
            lines.append(f"| {number} | {' + '.join(row['members'])} | {cells} |")
    if audit.get("skipped"):
        lines.append("")
    for skipped in audit.get("skipped", []):
        lines.append(f"- not retrained: **{' + '.join(skipped['members'])}**: {skipped['reason']}")
    return lines
