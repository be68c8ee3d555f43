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
    values are not Shapley values."""
    return f"{ValueKind(game['kind']).label} value"
