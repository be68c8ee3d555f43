"""A valuation job: what the coordinator is asked to do, as one JSON file.

The CLI writes a job file and Flower's ServerApp reads it (Flower's run config carries only
its path), so the same job runs in the Simulation Engine, under the Deployment Engine, or is
re-run later for an identical report.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.config.games import ValuationSettings
from common.config.hardware import Hardware
from common.config.spec import TrainingSpec
from common.errors import ConfigError
from common.status import AdapterSource
from common.storage.atomic import atomic_write
from common.storage.private_files import FILE_MODE
from common.trust.adapter_checks import AdapterLimits
from common.valuation.composition import COMPOSITION_RULES
from common.valuation.estimators import ESTIMATOR_KINDS
from common.valuation.payout import PAYOUT_POLICIES, check_payable
from common.valuation.shapley import ValueKind

JOB_SCHEMA_VERSION = 1
"""Version of ``job.json``'s layout; a job file of another version is refused, never misread."""

JOB_FILE = "job.json"
"""The job's file name in a run directory: where `fairpool value` writes it and a re-run finds it."""

OWNER_NAME_PATTERN = re.compile(r"^\w[\w.+@-]{0,63}$")
"""An owner name: 1–64 characters, letters (any script), digits and ``_ . + @ -``, not starting with
``.``, ``+``, ``@`` or ``-``. Names become file names (keys, adapters), table cells and report keys,
so separators, control and invisible characters are refused rather than escaped everywhere."""


def check_owner_name(name: str, option: str = "owner") -> str:
    """``name`` if it is a safe owner name (:data:`OWNER_NAME_PATTERN`), else one clear ConfigError."""
    if not isinstance(name, str) or not OWNER_NAME_PATTERN.fullmatch(name):
        shown = repr(name) if len(str(name)) <= 80 else repr(str(name)[:77]) + "…"
        raise ConfigError(f"{option} {shown}: an owner name has 1–64 letters, digits or _ . + @ - "
                          "(starting with a letter, digit or _), no spaces, separators or control characters")
    return name


def check_min_owners(value: object, owners: int | None = None) -> None:
    """``min_owners`` is a whole number ≥ 1 (and ≤ ``owners`` when the roster is known)."""
    top = owners if owners is not None else float("inf")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        limit = f"between 1 and the number of owners ({owners})" if owners is not None else "at least 1"
        raise ConfigError(f"`min_owners` must be {limit}, got {value!r}")


def check_declared_sizes(composition: str, undeclared: list[str]) -> None:
    """The ``size`` rule weighs owners by their examples: existing adapters must declare theirs."""
    if composition == "size" and undeclared:
        raise ConfigError("`composition` size (the default) weighs owners by their number of examples: give "
                          f"`adapter_examples` for {', '.join(undeclared)} (existing adapters), or choose "
                          "`composition` sum")


def check_owner_timeout(value: object) -> None:
    """``owner_timeout_s`` is a finite number of seconds > 0."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"`owner_timeout_s` must be a finite number of seconds > 0, got {value!r}")


@dataclass(frozen=True)
class OwnerEntry:
    """An owner the coordinator expects (the allowlist).

    ``data`` is set only for simulated owners. ``public_key`` is the owner's Ed25519 public key
    (PEM text or base64 of the raw 32 bytes); ``signing_key`` is the path of the matching private
    key, set only for simulated owners, whose clients run on the coordinator's machine.
    ``adapter`` (simulated owners only, instead of ``data``) is a PEFT adapter directory the
    owner already trained: it is valued as it is, and ``adapter_examples`` is the number of
    preference pairs the owner declares trained it (0: not declared).
    """

    name: str
    data: str = ""
    public_key: str = ""
    signing_key: str = ""
    adapter: str = ""
    adapter_examples: int = 0
    allow_audit: bool = True
    """A simulated owner's consent to the audit (``audit``): to train a stage of a sequential DPO
    chain on a model trained on others' data. Simulated owners share the coordinator's machine and
    user, so they consent unless told not to; a deployed owner consents only in its own node
    config (``allow-audit = true``), and this field is not read for it."""

    @property
    def source(self) -> AdapterSource:
        """How this owner's adapter comes to be (:class:`~common.status.AdapterSource`)."""
        return AdapterSource.of(self.adapter)


@dataclass(frozen=True)
class ValuationJob:
    """Settings of one valuation run (documented in docs/cli.md)."""

    run_id: str
    owners: tuple[OwnerEntry, ...]
    eval_path: str
    out_dir: str
    spec: TrainingSpec
    composition: str = "size"
    payout_policy: str = "robust"
    budget: float = 1.0
    min_owners: int = 1
    owner_timeout_s: float = 900.0
    simulated: bool = True
    embedded_market: bool = False
    valuation: ValuationSettings = field(default_factory=ValuationSettings)
    coordinator_key: str = ""
    """Ed25519 private key that signs the report (unsigned report when empty)."""
    coordinator_key_passphrase_env: str = ""
    """Environment variable holding the coordinator key's passphrase, if it has one."""
    storage_key: str = ""
    """Key file that encrypts adapters stored in the ledger (required to store them)."""
    adapter_limits: AdapterLimits = field(default_factory=AdapterLimits)
    hardware: Hardware = field(default_factory=Hardware)
    """Device and dtype of the coordinator's scoring and decoding and of simulated owners' training."""
    public_report: bool = False
    """Write the report files world-readable (0644) instead of 0600."""
    export_adapters: bool = False
    """Write each valued adapter, decrypted, as a PEFT directory under ``OUT/adapters/`` (for
    ``fairpool generate``); off by default, since the ledger keeps them sealed."""

    def __post_init__(self) -> None:
        names = [o.name for o in self.owners]
        if not names:
            raise ConfigError("a valuation needs at least one owner")
        for name in names:
            check_owner_name(name)
        check_min_owners(self.min_owners, len(names))
        check_owner_timeout(self.owner_timeout_s)
        if len(set(names)) != len(names):
            raise ConfigError(f"owner names must be unique, got {names}")
        if self.composition not in COMPOSITION_RULES:
            raise ConfigError(f"unknown composition {self.composition!r}; choose from {', '.join(COMPOSITION_RULES)}")
        if self.payout_policy not in PAYOUT_POLICIES:
            raise ConfigError(f"unknown payout policy {self.payout_policy!r}; choose from {', '.join(PAYOUT_POLICIES)}")
        try:  # before any training: a Banzhaf or leave-one-out payout needs a policy that says how
            check_payable(ESTIMATOR_KINDS.get(self.valuation.estimator, ValueKind.SHAPLEY), self.payout_policy)
        except ValueError as exc:
            raise ConfigError(f"`estimator` {self.valuation.estimator} with `payout_policy` {self.payout_policy}: "
                              f"{exc}") from None
        if not (self.budget >= 0 and self.budget != float("inf")):
            raise ConfigError(f"`budget` must be a finite non-negative amount, got {self.budget!r}")
        for o in self.owners:
            if o.data and o.adapter:
                raise ConfigError(f"owner {o.name}: give data or an existing adapter, not both")
            if o.adapter_examples < 0:
                raise ConfigError(f"owner {o.name}: `adapter_examples` must be ≥ 0, got {o.adapter_examples}")
            if not isinstance(o.allow_audit, bool):
                raise ConfigError(f"owner {o.name}: `allow_audit` must be true or false, got {o.allow_audit!r}")
        check_declared_sizes(self.composition, [o.name for o in self.owners if o.adapter and o.adapter_examples <= 0])
        keyed = [o.name for o in self.owners if o.public_key]
        if keyed and len(keyed) != len(names):
            raise ConfigError("either every owner has a public key or none does; missing for "
                              + ", ".join(o.name for o in self.owners if not o.public_key))

    @property
    def requires_signatures(self) -> bool:
        """Submissions must be signed when the allowlist holds public keys."""
        return any(o.public_key for o in self.owners)

    def same_work_as(self, other: "ValuationJob") -> bool:
        """Whether ``other`` asks for the same valuation: a resumable re-run.

        The run id and where the coordinator's keys are kept do not change the work (a moved
        or wrong storage key is caught when the stored adapters fail to decrypt).
        """
        mine, theirs = json.loads(self.to_json()), json.loads(other.to_json())
        for key in ("run_id", "coordinator_key", "coordinator_key_passphrase_env", "storage_key"):
            mine.pop(key), theirs.pop(key)
        return mine == theirs

    @property
    def owner_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.owners)

    def to_json(self) -> str:
        return json.dumps({"schema_version": JOB_SCHEMA_VERSION, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ValuationJob":
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ConfigError("a job file holds a JSON object")
        version = raw.pop("schema_version", None)
        if version != JOB_SCHEMA_VERSION:
            shown = repr(version) if version is not None else "0 (unversioned)"
            raise ConfigError(f"a job of schema version {shown}; "
                              f"this FairPool reads version {JOB_SCHEMA_VERSION}: re-create the job (fairpool value, "
                              "deploy/make_job.py) rather than resuming it")
        raw["owners"] = tuple(OwnerEntry(**o) for o in raw["owners"])
        raw["spec"] = TrainingSpec(**raw["spec"])
        if "hardware" in raw:
            raw["hardware"] = Hardware(**raw["hardware"])
        if "adapter_limits" in raw:
            raw["adapter_limits"] = AdapterLimits(**raw["adapter_limits"])
        if "valuation" in raw:
            settings = dict(raw["valuation"])
            settings["utilities"] = tuple(settings.get("utilities", ("preference",)))
            raw["valuation"] = ValuationSettings(**settings)
        return cls(**raw)

    def save(self, path: str | Path) -> Path:
        """Write atomically, so a reader never sees half a job."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, self.to_json().encode("utf-8"), FILE_MODE)

    @classmethod
    def load(cls, path: str | Path) -> "ValuationJob":
        try:
            return cls.from_json(Path(path).read_text())
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"cannot read job file {path}: {exc}") from exc
