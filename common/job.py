"""A valuation job: what the coordinator is asked to do, as one JSON file.

The CLI writes a job file and Flower's ServerApp reads it (Flower's run config carries only
its path), so the same job runs in the Simulation Engine, under the Deployment Engine, or is
re-run later for an identical report.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.composition import COMPOSITION_RULES
from common.errors import ConfigError
from common.games_config import ValuationSettings
from common.payout import PAYOUT_POLICIES
from common.spec import TrainingSpec


@dataclass(frozen=True)
class OwnerEntry:
    """An owner the coordinator expects; ``data`` is set only for simulated owners."""

    name: str
    data: str = ""


@dataclass(frozen=True)
class ValuationJob:
    """Settings of one valuation run (documented in docs/cli.md)."""

    run_id: str
    owners: tuple[OwnerEntry, ...]
    eval_path: str
    out_dir: str
    spec: TrainingSpec
    composition: str = "sum"
    payout_policy: str = "positive"
    budget: float = 1.0
    min_owners: int = 1
    owner_timeout_s: float = 900.0
    simulated: bool = True
    embedded_market: bool = False
    valuation: ValuationSettings = field(default_factory=ValuationSettings)

    def __post_init__(self) -> None:
        names = [o.name for o in self.owners]
        if not names:
            raise ConfigError("a valuation needs at least one owner")
        if len(set(names)) != len(names):
            raise ConfigError(f"owner names must be unique, got {names}")
        if self.composition not in COMPOSITION_RULES:
            raise ConfigError(f"unknown composition {self.composition!r}; choose from {', '.join(COMPOSITION_RULES)}")
        if self.payout_policy not in PAYOUT_POLICIES:
            raise ConfigError(f"unknown payout policy {self.payout_policy!r}; choose from {', '.join(PAYOUT_POLICIES)}")
        if not (self.budget >= 0 and self.budget != float("inf")):
            raise ConfigError(f"budget must be a finite non-negative amount, got {self.budget!r}")

    @property
    def owner_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.owners)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ValuationJob":
        raw = json.loads(text)
        raw["owners"] = tuple(OwnerEntry(**o) for o in raw["owners"])
        raw["spec"] = TrainingSpec(**raw["spec"])
        if "valuation" in raw:
            settings = dict(raw["valuation"])
            settings["utilities"] = tuple(settings.get("utilities", ("preference",)))
            raw["valuation"] = ValuationSettings(**settings)
        return cls(**raw)

    def save(self, path: str | Path) -> Path:
        """Write atomically, so a reader never sees half a job."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".job-")
        with os.fdopen(fd, "w") as fh:
            fh.write(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ValuationJob":
        try:
            return cls.from_json(Path(path).read_text())
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"cannot read job file {path}: {exc}") from exc
