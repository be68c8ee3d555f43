"""The training spec the coordinator sends to every owner.

One frozen dataclass (TRL's habit: one documented config per trainer) that travels as a flat
Flower ``ConfigRecord``; every owner trains with exactly these settings so that their adapters
compose. Defaults suit the tiny embedded model on a CPU (stack notes: TRL's GPU defaults barely
move a small adapter); the paper's LoRA r=8, α=16, β=0.1 are kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from common.digest import json_sha256
from common.errors import ConfigError


@dataclass(frozen=True)
class TrainingSpec:
    """Everything an owner needs to fine-tune a composable DPO LoRA adapter."""

    base_model: str
    """Local directory (or hub id) of the shared base/reference model π₀."""
    base_fingerprint: str = ""
    """Digest of π₀'s weights; an owner whose base differs refuses to train ("" skips the check)."""
    lora_r: int = 8
    """LoRA rank (paper: 8)."""
    lora_alpha: int = 16
    """LoRA scaling α (paper: 16)."""
    lora_dropout: float = 0.0
    """Dropout in LoRA layers; 0 keeps training deterministic for a given seed."""
    target_modules: str = ""
    """Comma-separated module names to adapt; "" lets PEFT choose for the architecture."""
    beta: float = 0.1
    """DPO temperature β (paper: 0.1)."""
    learning_rate: float = 5e-3
    """AdamW learning rate; high because the model and adapter are tiny."""
    epochs: float = 3.0
    """Passes over the owner's data."""
    batch_size: int = 16
    """Examples per optimisation step."""
    max_length: int = 96
    """Longest prompt+response in tokens; examples whose prompt alone reaches it are dropped."""
    seed: int = 0
    """Seed of adapter initialisation and data order."""

    def __post_init__(self) -> None:
        positive = {"lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "beta": self.beta,
                    "learning_rate": self.learning_rate, "epochs": self.epochs,
                    "batch_size": self.batch_size, "max_length": self.max_length}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"training spec: {name} must be positive, got {value!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"training spec: lora_dropout must be in [0, 1), got {self.lora_dropout!r}")

    def to_record(self) -> dict[str, Any]:
        """Flat dict of scalars, as a Flower ``ConfigRecord`` holds them."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "TrainingSpec":
        """Rebuild from a record, ignoring unknown keys, casting to the declared types."""
        kwargs = {}
        for f in fields(cls):
            if f.name in record:
                caster = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
                kwargs[f.name] = caster(record[f.name])
        if "base_model" not in kwargs:
            raise ConfigError("training spec has no base_model")
        return cls(**kwargs)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form: what owners sign they trained with."""
        return json_sha256(self.to_record())
