"""The training spec the coordinator sends to every owner.

One frozen dataclass (TRL's habit: one documented config per trainer) that travels as a flat
Flower ``ConfigRecord``; every owner trains with exactly these settings so that their adapters
compose. Each field carries its default *and* its help text (``field(metadata={"help": …})``):
the command line (:func:`common.config.options.add_dataclass_options`), ``--spec FILE`` and
docs/cli.md are all derived from these fields, so help, docs and code cannot drift apart.

Defaults suit the tiny embedded model on a CPU (stack notes: TRL's GPU defaults barely move a
small adapter); the paper's LoRA r=8, α=16, β=0.1 are kept. Real models usually want a lower
learning rate (1e-5 … 5e-4) and a longer ``max_length``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.trust.canonical import json_sha256


def _help(text: str, *, cli: bool = True) -> dict[str, Any]:
    return {"help": text, "cli": cli}


@dataclass(frozen=True)
class TrainingSpec:
    """Everything an owner needs to fine-tune a composable DPO LoRA adapter."""

    base_model: str = field(metadata=_help(
        "local directory of the shared base/reference model π₀", cli=False))
    base_fingerprint: str = field(default="", metadata=_help(
        "digest of π₀'s weights; an owner whose base differs refuses to train", cli=False))
    lora_r: int = field(default=8, metadata=_help("LoRA rank (paper: 8)"))
    lora_alpha: int = field(default=16, metadata=_help("LoRA scaling α (paper: 16)"))
    lora_dropout: float = field(default=0.0, metadata=_help(
        "dropout in LoRA layers; 0 keeps training deterministic for a given seed"))
    target_modules: str = field(default="", metadata={**_help(
        "comma-separated module names LoRA adapts; empty = PEFT's default for the architecture"),
        "flag": "--lora-target-modules"})
    beta: float = field(default=0.1, metadata=_help("DPO temperature β (paper: 0.1)"))
    learning_rate: float = field(default=5e-3, metadata=_help(
        "AdamW learning rate (high because the embedded model is tiny; real models: 1e-5…5e-4)"))
    epochs: float = field(default=6.0, metadata=_help(
        "passes over each owner's data (6: near convergence on the embedded market, where arithmetic "
        "coalitions match retrained ones; docs/fidelity.md)"))
    batch_size: int = field(default=16, metadata=_help("pairs per device per optimisation step"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help(
        "steps whose gradients are summed before an update (effective batch = batch-size × this)"))
    max_length: int = field(default=96, metadata=_help(
        "longest prompt+response in tokens (longer ones are cut at the end); pairs whose prompt "
        "alone reaches it are dropped and counted"))
    max_prompt_length: int = field(default=0, metadata=_help(
        "longest prompt in tokens, keeping its last tokens; 0 = no separate prompt limit"))
    chat_template: str = field(default="", metadata=_help(
        "Jinja chat template applied to conversational data (set with --chat-template FILE); "
        "empty = the tokenizer's own", cli=False))
    seed: int = field(default=0, metadata=_help("seed of adapter initialisation and data order", cli=False))

    def __post_init__(self) -> None:
        positive = ("lora_r", "lora_alpha", "beta", "learning_rate", "epochs", "batch_size",
                    "gradient_accumulation_steps", "max_length")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not value > 0:
                raise ConfigError(f"training spec: `{name}` must be a finite positive number, got {value!r}")
        if self.learning_rate > 10:
            raise ConfigError(f"training spec: `learning_rate` {self.learning_rate!r} is far above any usable value "
                              "(AdamW diverges); give at most 10")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"training spec: `lora_dropout` must be in [0, 1), got {self.lora_dropout!r}")
        if self.max_prompt_length < 0:
            raise ConfigError(f"training spec: `max_prompt_length` must be ≥ 0, got {self.max_prompt_length!r}")
        if self.max_prompt_length and self.max_prompt_length >= self.max_length:
            raise ConfigError(f"training spec: `max_prompt_length` ({self.max_prompt_length}) must be below "
                              f"`max_length` ({self.max_length}), or every response would be cut away")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"training spec: `seed` must be in 0…2³²−1, got {self.seed!r}")

    @property
    def target_module_list(self) -> list[str] | None:
        """``target_modules`` as a list, or ``None`` for PEFT's per-architecture default."""
        return [t.strip() for t in self.target_modules.split(",") if t.strip()] or None

    def to_record(self) -> dict[str, Any]:
        """Flat dict of scalars, as a Flower ``ConfigRecord`` holds them."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "TrainingSpec":
        """Rebuild from a record, ignoring unknown keys, casting to the declared types."""
        kwargs = {}
        for f in fields(cls):
            if f.name in record:
                kwargs[f.name] = cast_field(f, record[f.name])
        if "base_model" not in kwargs:
            raise ConfigError("training spec has no base_model")
        return cls(**kwargs)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form: what owners sign they trained with."""
        return json_sha256(self.to_record())


_CASTERS = {"int": int, "float": float, "str": str}


def field_type(f) -> str:
    """The declared scalar type name of a spec field (``"int"``, ``"float"`` or ``"str"``)."""
    return f.type if isinstance(f.type, str) else f.type.__name__


def cast_field(f, value: Any) -> Any:
    """``value`` as field ``f``'s type; a wrong type is a :class:`ConfigError` naming the field."""
    kind = field_type(f)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind == "int" and isinstance(value, float):
        raise ConfigError(f"training spec: `{f.name}` must be a whole number, got {value!r}")
    try:
        return _CASTERS[kind](value)
    except (TypeError, ValueError):
        raise ConfigError(f"training spec: `{f.name}` must be {kind}, got {value!r}") from None


SPEC_FILE_KEYS = tuple(f.name for f in fields(TrainingSpec) if f.metadata.get("cli", True)) + ("seed",)
"""What a ``--spec FILE`` may set: every training setting (the base model comes from --base-model)."""
SETTABLE_KEYS = SPEC_FILE_KEYS + ("chat_template",)
"""What a caller may set by name: a spec file's keys and the chat template's text (the CLI reads
``--chat-template FILE`` into it)."""


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Training settings from a TOML or JSON file (``--spec FILE``), checked key by key.

    Keys are the spec's field names; dashes are accepted for underscores (``max-length``), so
    the file can mirror the command line. Unknown keys are errors: a misspelt setting silently
    ignored would train with the default the user meant to change.
    """
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"spec file {path}: cannot read: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(raw_bytes.decode("utf-8"))
        elif path.suffix.lower() == ".json":
            data = json.loads(raw_bytes.decode("utf-8"))
        else:
            raise ConfigError(f"spec file {path}: expected a .toml or .json file")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"spec file {path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"spec file {path}: expected a table of settings")
    return spec_settings(data, where=f"spec file {path}")


def spec_settings(data: Mapping[str, Any], where: str = "training spec",
                  keys: tuple[str, ...] = SPEC_FILE_KEYS) -> dict[str, Any]:
    """Training settings given by name (a spec file's table, a Python caller's ``spec={...}``),
    each checked and cast to its field's type: ``epochs=1`` becomes ``1.0``, as the command line
    gives it, so the spec's digest is the same whichever way it was set."""
    by_name = {f.name: f for f in fields(TrainingSpec)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name == "lora_target_modules":
            name = "target_modules"
        if name not in keys:
            raise ConfigError(f"{where}: unknown setting {key!r}; known: "
                              + ", ".join(k.replace("_", "-") for k in keys))
        if name == "target_modules" and isinstance(value, list):
            value = ",".join(map(str, value))
        out[name] = cast_field(by_name[name], value)
    return out
