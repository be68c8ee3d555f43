"""What a report is: its file names and modes, and reading its games (shared by every renderer)."""

from __future__ import annotations

from common.valuation.shapley import ValueKind

REPORT_JSON = "report.json"

REPORT_MD = "report.md"

VALUES_PNG = "values.png"

SIGNATURE_PNG = "signature.png"

REPORT_HTML = "report.html"


PRIVATE_FILE_MODE = 0o600
"""Report files by default: they hold every owner's payout; owners get theirs from `fairpool serve`."""

PUBLIC_FILE_MODE = 0o644
"""With ``--public-report`` (and for study outputs, which name no payouts): readable by everyone."""


def payout_game(report: dict) -> dict:
    """The game the payout is computed from."""
    return next(g for g in report["games"] if g["utility"] == report["payout"]["game"])


def value_kind(game: dict) -> str:
    """What a game's values are, as the report states it (``kind``): Banzhaf and leave-one-out
    values are not Shapley values; Beta Shapley names its weights, Beta(α,β)."""
    kind = ValueKind(game["kind"])
    params = game.get("params", {})
    if kind is ValueKind.BETA and "alpha" in params:
        return f"Beta({params['alpha']:g},{params['beta']:g}) Shapley value"
    return f"{kind.label} value"


def advice_sentences(game: dict) -> list[str]:
    """The data-mix advice of a game in plain words (``report.md``, ``report.html`` and the
    terminal say the same): best mix, whom the pool is better without, value per example."""
    advice = game.get("advice")
    if not advice:
        return []
    how = {"exact": f"over all {advice['searched']} coalitions",
           "beam": f"beam search over {advice['searched']} coalitions",
           "evaluated": f"best of the {advice['searched']} coalitions evaluated"}[advice["method"]]
    best = " + ".join(advice["best"]) or "no owner (the base model)"
    gain = advice["gain_over_grand"]
    sentences = [f"Best mix: {best}, utility {advice['best_value']:.4f} "
                 + (f"({gain:+.4f} over pooling every owner, {how})." if gain > 0
                    else f"(pooling every owner is best, {how}).")]
    if advice["better_without"]:
        sentences.append("The pool is better without " + ", ".join(
            f"{name} ({delta:+.4f} when left out)" for name, delta in advice["better_without"].items()) + ".")
    if advice["per_example"]:
        sentences.append("Value per example: " + ", ".join(
            f"{name} {value:+.5f}" for name, value in advice["per_example"].items()) + ".")
    return sentences


def owner_flags(report: dict, name: str) -> list[str]:
    """What the report flags about one owner, in short words for the flagged column of every
    renderer: a negative value, a replica group it is paid in, a near-identical adapter."""
    payout = report["payout"]
    flags = ["negative value"] if name in payout.get("flagged", ()) else []
    for group in payout.get("replicas", ()):
        if name in group["owners"]:
            others = ", ".join(o for o in group["owners"] if o != name)
            flags.append(f"one source with {others} (margin similarity {group['similarity']:.4f}), "
                         f"paid as {group['representative']}")
    for flag in report.get("flags", ()):
        if name in flag["owners"]:
            other = next((o for o in flag["owners"] if o != name), name)
            flags.append(f"adapter near-identical to {other}'s (cosine {flag['cosine']:.4f})")
    return flags
