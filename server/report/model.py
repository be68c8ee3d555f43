"""``report.json`` as typed Python objects, for notebooks and programs.

The file stays the contract (docs/report.md): a :class:`Report` is read from it (or from the
dict a run returns), keeps that dict as :attr:`Report.raw` (what is signed and verified), and
gives typed views of what people read — owners, games with their values and coalition
utilities, the payout — plus :meth:`Report.to_dataframe` for pandas and :meth:`Report.game`,
which rebuilds a game from the stored utilities so any estimator can be run on it with no
model work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.trust.signing import check_report_version
from common.valuation.game import Game

if TYPE_CHECKING:  # pandas is imported only when a frame is asked for
    import pandas as pd

__all__ = ["AuditResult", "AuditedCoalition", "GameResult", "OwnerResult", "PayoutResult", "PlayerValue", "Report",
           "read_report"]


@dataclass(frozen=True)
class PlayerValue:
    """One owner's value in one game, with its standard error and the evaluations behind it."""

    value: float
    stderr: float
    count: int


@dataclass(frozen=True)
class OwnerResult:
    """What the run did with one owner: ``status`` is ``valued`` or ``rejected`` (with ``reason``)."""

    name: str
    status: str
    source: str
    num_examples: int
    reason: str | None
    adapter_sha256: str | None


@dataclass(frozen=True)
class GameResult:
    """One game: its utility, how it was valued, every owner's value and the coalition table."""

    utility: str
    kind: str
    estimator: str
    status: str
    empty: float
    grand: float
    values: Mapping[str, PlayerValue]
    coalitions: Mapping[frozenset[str], float]

    @property
    def players(self) -> tuple[str, ...]:
        return tuple(self.values)


@dataclass(frozen=True)
class PayoutResult:
    """How the budget was split: from which game and value kind, by which policy."""

    game: str
    kind: str
    policy: str
    description: str
    budget: float
    shares: Mapping[str, float]
    amounts: Mapping[str, float]
    flagged: tuple[str, ...]
    replicas: tuple[tuple[str, ...], ...] = ()
    """Under the ``robust`` policy: the groups of owners paid as one source."""


@dataclass(frozen=True)
class AuditedCoalition:
    """One coalition the audit retrained: its utilities by arithmetic and retrained, per utility."""

    members: tuple[str, ...]
    arithmetic: Mapping[str, float]
    retrained: Mapping[str, float]


@dataclass(frozen=True)
class AuditResult:
    """The audit of a run (``--audit K``): what was retrained, what was skipped and why, and how
    well the arithmetic agreed (per utility: pearson, spearman, max_abs_error, mean_abs_error)."""

    requested: int
    coalitions: tuple[AuditedCoalition, ...]
    skipped: Mapping[tuple[str, ...], str]
    declined: Mapping[str, str]
    agreement: Mapping[str, Mapping[str, float | None]]
    fine_tunings: int
    wall_s: float
    note: str = ""


@dataclass(frozen=True)
class Report:
    """A run's report. ``raw`` is the ``report.json`` object itself (signed, verifiable)."""

    raw: Mapping[str, Any]
    path: Path | None = None

    def __post_init__(self) -> None:
        check_report_version(dict(self.raw))

    @classmethod
    def from_file(cls, path: str | Path) -> "Report":
        path = Path(path)
        return cls(json.loads(path.read_text(encoding="utf-8")), path)

    @property
    def run_id(self) -> str:
        return str(self.raw["run_id"])

    @property
    def owners(self) -> tuple[OwnerResult, ...]:
        return tuple(OwnerResult(o["name"], o["status"], o.get("source", "trained"), int(o.get("num_examples") or 0),
                                 o.get("reason"), o.get("adapter_sha256")) for o in self.raw["owners"])

    @property
    def games(self) -> tuple[GameResult, ...]:
        return tuple(_game(g) for g in self.raw["games"])

    @property
    def payout(self) -> PayoutResult:
        p = self.raw["payout"]
        return PayoutResult(p["game"], p["kind"], p["policy"], p.get("policy_description", ""), float(p["budget"]),
                            dict(p["shares"]), dict(p["amounts"]), tuple(p.get("flagged", ())),
                            tuple(tuple(r["owners"]) for r in p.get("replicas", ())))

    @property
    def audit(self) -> AuditResult | None:
        """The run's audit, or None when it asked for none."""
        a = self.raw.get("audit")
        if a is None:
            return None
        return AuditResult(int(a.get("requested", 0)),
                           tuple(AuditedCoalition(tuple(c["members"]), dict(c["arithmetic"]), dict(c["retrained"]))
                                 for c in a.get("coalitions", ())),
                           {tuple(s["members"]): str(s["reason"]) for s in a.get("skipped", ())},
                           dict(a.get("declined", {})), {u: dict(v) for u, v in a.get("agreement", {}).items()},
                           int(a.get("fine_tunings", 0)), float(a.get("wall_s", 0.0)), str(a.get("note", "")))

    def audit_dataframe(self) -> "pd.DataFrame":
        """One row per audited coalition: its members, then each utility's arithmetic and
        retrained value and their difference (empty without an audit)."""
        import pandas as pd

        audit = self.audit
        rows = []
        for c in audit.coalitions if audit is not None else ():
            row: dict[str, Any] = {"coalition": " + ".join(c.members), "size": len(c.members)}
            for utility in c.arithmetic:
                row[f"{utility}_arithmetic"] = c.arithmetic[utility]
                row[f"{utility}_retrained"] = c.retrained[utility]
                row[f"{utility}_error"] = c.arithmetic[utility] - c.retrained[utility]
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def signed(self) -> bool:
        return "signature" in self.raw

    def verify(self, coordinator_key: str | Path) -> None:
        """Check the coordinator's signature (the key file or PEM the caller trusts, never one
        the report names); raises :class:`~common.trust.signing.SignatureError` on any change."""
        from common.trust.signing import load_public_key, verify_report

        verify_report(dict(self.raw), load_public_key(coordinator_key))

    def game_result(self, utility: str | None = None) -> GameResult:
        """The game of ``utility`` (default: the one the payout is from)."""
        wanted = utility or self.payout.game
        for game in self.games:
            if game.utility == wanted:
                return game
        raise KeyError(f"no game {wanted!r} in run {self.run_id}; games: {[g.utility for g in self.games]}")

    def game(self, utility: str | None = None) -> Game:
        """The game of ``utility`` rebuilt from the stored coalition utilities: run any estimator
        on it (``fairpool.estimate``) without a model. A report that omitted coalitions (more
        owners than it lists) answers only the stored ones."""
        result = self.game_result(utility)
        return Game.from_utilities(result.players, result.coalitions)

    def to_dataframe(self) -> "pd.DataFrame":
        """One row per owner: status, examples, then each game's value and stderr, share and amount."""
        import pandas as pd

        payout = self.payout
        rows = []
        for owner in self.owners:
            row: dict[str, Any] = {"owner": owner.name, "status": owner.status, "source": owner.source,
                                   "examples": owner.num_examples}
            for game in self.games:
                held = game.values.get(owner.name)
                row[f"{game.utility}"] = held.value if held else float("nan")
                row[f"{game.utility}_stderr"] = held.stderr if held else float("nan")
            row["share"] = payout.shares.get(owner.name, 0.0)
            row["amount"] = payout.amounts.get(owner.name, 0.0)
            rows.append(row)
        return pd.DataFrame(rows).set_index("owner")

    def coalitions_dataframe(self, utility: str | None = None) -> "pd.DataFrame":
        """The stored coalition utilities of one game: one row per coalition, a column per owner."""
        import pandas as pd

        game = self.game_result(utility)
        rows = [{**{p: p in members for p in game.players}, "size": len(members), "utility": value}
                for members, value in game.coalitions.items()]
        return pd.DataFrame(rows).sort_values(["size", "utility"], ascending=[True, False], ignore_index=True)


def _game(g: Mapping[str, Any]) -> GameResult:
    values = {name: PlayerValue(float(v["value"]), float(v.get("stderr", 0.0)), int(v.get("count", 0)))
              for name, v in g["values"].items()}
    coalitions = {frozenset(c["members"]): float(c["value"]) for c in g.get("coalitions", ())}
    return GameResult(g["utility"], g.get("kind", "shapley"), g["estimator"], g["status"], float(g["empty"]),
                      float(g["grand"]), values, coalitions)


def read_report(path: str | Path) -> Report:
    """The report in ``path`` (``report.json``), typed."""
    return Report.from_file(path)
