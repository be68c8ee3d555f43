"""What a report is: its file names and modes, and reading its games (shared by every renderer)."""

from __future__ import annotations

from common.valuation.shapley import EFFICIENT_KINDS, ValueKind

REPORT_JSON = "report.json"

REPORT_MD = "report.md"

VALUES_PNG = "values.png"

SIGNATURE_PNG = "signature.png"

REPORT_HTML = "report.html"
AUDIT_PNG = "audit.png"
"""With an audit that compared coalitions: arithmetic against retrained utility, one point each."""


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


DROP_WORDS = {
    "prompt_too_long": "the prompt alone fills max_length", "invalid_utf8": "not UTF-8",
    "field_too_long": "a field over the size limit", "empty_field": "an empty field",
    "chosen_equals_rejected": "chosen equals rejected", "duplicate": "exact repeats",
}
"""Each drop reason in plain words (the reasons of ``common.data.DROP_REASONS`` and the trainer's)."""


def rows_account(owner: dict) -> str:
    """How many of an owner's rows trained its adapter and why the others did not, or ``""``
    when every row was used as given: e.g. ``used 18 of 61 rows; 43 dropped (the prompt alone
    fills max_length: 43); 2 truncated to max_length``."""
    dropped = {k: int(v) for k, v in (owner.get("dropped") or {}).items() if int(v) > 0}
    truncated = int((owner.get("metrics") or {}).get("truncated_examples", 0))
    if not dropped and not truncated:
        return ""
    used = int(owner.get("num_examples") or 0)
    parts = [f"used {used} of {used + sum(dropped.values())} rows"]
    if dropped:
        reasons = ", ".join(f"{DROP_WORDS.get(k, k)}: {v}" for k, v in dropped.items())
        parts.append(f"{sum(dropped.values())} dropped ({reasons})")
    if truncated:
        parts.append(f"{truncated} truncated to max_length")
    return "; ".join(parts)


def examples_cell(owner: dict) -> str:
    """``320``, or ``18 of 61`` when rows were dropped (the reasons are listed below the table)."""
    used = owner.get("num_examples") or 0
    dropped = sum(int(v) for v in (owner.get("dropped") or {}).values())
    if not used and not dropped:
        return "—"
    return f"{used} of {used + dropped}" if dropped else str(used)


def value_unit(game: dict) -> tuple[float, str, str]:
    """How a game's values read in words: ``(scale, short unit, long unit)``.

    Preference accuracy is a fraction of held-out pairs, so its values read as percentage
    *points* of accuracy (×100): +0.2714 is 27.14 points over the base model. The log-sigmoid
    utility is a mean log-likelihood, in nats; a reward game is in its scorer's units.
    """
    metric = str(game.get("metric", ""))
    if metric == "accuracy":
        return 100.0, "pts", "points of held-out preference accuracy"
    if str(game.get("utility", "")).startswith("reward:"):
        scorer = metric.removeprefix("mean ").removesuffix(" reward")
        return 1.0, f"{scorer} reward", f"mean {scorer} reward of the generations"
    return 1.0, "nats", "nats of mean log σ(β·margin) on the held-out pairs"


def value_digits(game: dict) -> int:
    """Decimals of a value in words: 2 for points of accuracy (+27.14 pts), 4 otherwise (nats and
    rewards are small numbers): the tables and the plain reading round alike."""
    return 2 if value_unit(game)[0] == 100.0 else 4


def format_with_unit(game: dict, value: dict | None) -> str:
    """``+27.14 pts`` or ``+0.0123 ± 0.0040 nats``: the value in its unit; a ± only for an
    estimate (an exact value's stderr is 0 and is not shown)."""
    if not value:
        return "—"
    scale, unit, _ = value_unit(game)
    digits = value_digits(game)
    text = f"{value['value'] * scale:+.{digits}f}"
    if value.get("stderr"):
        text += f" ± {value['stderr'] * scale:.{digits}f}"
    return f"{text} {unit}"


def is_exact(game: dict) -> bool:
    """Whether every value of the game is exact (all standard errors 0)."""
    return not any(v.get("stderr") for v in game["values"].values())


def utility_level(game: dict, utility: float, *, unit: bool = True) -> str:
    """A coalition's utility in words: ``73.5%`` of held-out pairs, or ``-0.4120 nats``."""
    scale, short, _ = value_unit(game)
    if scale == 100.0:
        return f"{utility * 100:.1f}%"
    return f"{utility:.4f} {short}" if unit else f"{utility:.4f}"


def plain_reading(report: dict) -> str:
    """The report's first paragraph: what the payout game's numbers mean, in plain words.

    e.g. "Pooling all 5 valued owners raises held-out preference accuracy from 50.0% (the base
    model) to 100.0%. Contributions (Shapley values, points): clean +27.14, …; flipped (−22.90)
    lowers it. These values are exact and add up to the +50.00-point gain of pooling. …"
    """
    game = payout_game(report)
    payout = report["payout"]
    scale, unit, long_unit = value_unit(game)
    digits = value_digits(game)
    what = {"pts": "held-out preference accuracy", "nats": "the mean log σ(β·margin) of the held-out pairs"
            }.get(unit, f"the mean {unit} of the generations")
    names = list(game["values"])
    values = {n: game["values"][n]["value"] for n in names}
    gain = game["grand"] - game["empty"]
    move = "raises" if gain > 0 else ("lowers" if gain < 0 else "leaves")
    base = "the base model"
    sentences = [f"Pooling all {len(names)} valued owners {move} {what} "
                 + (f"from {utility_level(game, game['empty'])} ({base}) to {utility_level(game, game['grand'])}."
                    if gain else f"at {utility_level(game, game['empty'])}, {base}'s level.")]
    word = "points" if scale == 100.0 else unit
    ups = [f"{n} {values[n] * scale:+.{digits}f}" for n in sorted(names, key=lambda n: -values[n]) if values[n] > 0]
    downs = [f"{n} ({values[n] * scale:+.{digits}f})" for n in sorted(names, key=lambda n: values[n]) if values[n] < 0]
    if ups:
        sentences.append(f"Contributions ({value_kind(game)}s, {word}): " + ", ".join(ups)
                         + (f"; {' and '.join(downs)} lower{'s' if len(downs) == 1 else ''} it" if downs else "")
                         + ".")
    elif downs:
        sentences.append("No owner raises it; " + ", ".join(downs) + " lower it.")
    exact = "exact" if is_exact(game) else "estimated (± one standard error where shown)"
    if ValueKind(game["kind"]) in EFFICIENT_KINDS:
        sentences.append(f"These values are {exact} and add up to the {gain * scale:+.{digits}f}-{word.rstrip('s')} "
                         "gain of pooling." if scale == 100.0 else
                         f"These values are {exact} and add up to the gain of pooling, {gain:+.4f} {unit}.")
    else:
        sentences.append(f"These values are {exact}; {value_kind(game)}s do not add up to the gain of pooling, "
                         "so the payout normalises them.")
    sentences.append(f"Values are in {long_unit}.")
    paid = sorted((n for n, s in payout["shares"].items() if s > 0), key=lambda n: -payout["shares"][n])
    if paid:
        sentences.append(f"A budget of {payout['budget']:g} goes to " + ", ".join(
            f"{n} {payout['shares'][n]:.1%}" for n in paid) + f" ({payout['policy']} policy"
            + (": " + "; ".join(" and ".join(r["owners"]) + " paid as one source" for r in payout.get("replicas", []))
               if payout.get("replicas") else "") + ").")
    rejected = [o["name"] for o in report["owners"] if o["status"] != "valued"]
    if rejected:
        sentences.append(f"Not valued: {', '.join(rejected)} (see the rejected owners).")
    trimmed = [f"{o['name']} {rows_account(o)}" for o in report["owners"] if rows_account(o)]
    if trimmed:
        sentences.append("Rows: " + "; ".join(trimmed) + ".")
    return " ".join(sentences)


AUDIT_UTILITY_WORDS = {"preference": "held-out accuracy", "preference-logsigmoid": "held-out log σ(β·m)"}


def has_audit_points(report: dict) -> bool:
    """Whether the report's audit compared at least one coalition (and so has ``audit.png``)."""
    return bool(report.get("audit", {}).get("coalitions"))


def audit_summary(audit: dict) -> str:
    """The audit in plain words: what was retrained, what it cost, how well the arithmetic held,
    and what was skipped (report.md, report.html and the terminal say the same)."""
    rows, skipped = audit.get("coalitions", []), audit.get("skipped", [])
    if not rows:
        reason = audit.get("note") or (f"all {len(skipped)} chosen coalition(s) were skipped" if skipped else
                                       "nothing was retrained")
        return f"Audit of {audit.get('requested', 0)} coalition(s): no coalition was compared ({reason})."
    parts = [f"The federation really retrained {len(rows)} coalition(s) by sequential DPO, each stage by its "
             f"owner on its own data ({audit.get('fine_tunings', 0)} fine-tunings, {audit.get('wall_s', 0):.0f} s)."]
    for utility, stats in audit.get("agreement", {}).items():
        correlation = stats.get("pearson")
        told = "no correlation (fewer than two distinct points)" if correlation is None else \
            f"Pearson {correlation:.2f}, Spearman {_or_dash(stats.get('spearman'))}"
        parts.append(f"On {AUDIT_UTILITY_WORDS.get(utility, utility)}, arithmetic against retrained: {told}, "
                     f"largest error {stats['max_abs_error']:.4f}.")
    parts.append(f"Each chain trains its owners in {audit.get('order', 'roster order')}; sequential DPO depends on "
                 "that order (where owners with opposed data meet, the last trained weighs most: docs/fidelity.md).")
    if skipped:
        parts.append(f"{len(skipped)} chosen coalition(s) were not retrained: "
                     + "; ".join(f"{'+'.join(s['members'])} ({s['reason']})" for s in skipped) + ".")
    return " ".join(parts)


def _or_dash(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"
