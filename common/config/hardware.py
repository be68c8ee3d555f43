"""Where models run and in which precision: ``--device`` and ``--dtype``, resolved in one place.

Nothing in FairPool is pinned to a CPU: owners' training, the coordinator's scoring and composed
decoding all take a :class:`Hardware` and resolve it on the machine that does the work (an
owner's SuperNode may have a GPU the coordinator lacks, or the other way round), so the
setting travels as the *request* (``auto``) and is resolved where the model is loaded.

``auto`` picks CUDA when it is available (then Apple's MPS), else the CPU; the ``auto`` dtype
is bfloat16 on a GPU that supports it, float16 on an older GPU or MPS, float32 on a CPU —
which keeps every CPU figure exactly as before. Adapters always travel as float32 whatever
precision trained them (Flower arrays carry no bfloat16, stack notes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:K", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Hardware:
    """The requested device and precision (resolved by :meth:`resolve` where models load)."""

    device: str = field(default="auto", metadata={
        "help": "where models run: auto (CUDA when available), cpu, cuda, cuda:K or mps"})
    dtype: str = field(default="auto", metadata={
        "help": "model precision: auto (bfloat16 on a GPU that supports it, float32 on CPU), "
                "float32, bfloat16 or float16"})
    gpus_per_owner: float = field(default=1.0, metadata={
        "help": "share of a GPU each simulated owner gets in the Simulation Engine when GPUs exist "
                "(0.5 = two owners per GPU); ignored without a GPU"})

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not _DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"`device` {self.device!r}: choose from {', '.join(DEVICE_CHOICES)}")
        if self.dtype not in DTYPE_CHOICES:
            raise ConfigError(f"`dtype` {self.dtype!r}: choose from {', '.join(DTYPE_CHOICES)}")
        if not (0 < self.gpus_per_owner <= 64):
            raise ConfigError(f"`gpus_per_owner` must be in (0, 64], got {self.gpus_per_owner!r}")

    def resolve(self) -> "ResolvedHardware":
        """The concrete device and torch dtype on *this* machine; a device it lacks is an error."""
        device = resolve_device(self.device)
        return ResolvedHardware(device, resolve_dtype(self.dtype, device))

    def to_record(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype, "gpus_per_owner": float(self.gpus_per_owner)}

    @classmethod
    def from_record(cls, record) -> "Hardware":
        return cls(device=str(record.get("device", "auto")), dtype=str(record.get("dtype", "auto")),
                   gpus_per_owner=float(record.get("gpus_per_owner", 1.0)))


@dataclass(frozen=True)
class ResolvedHardware:
    device: str
    """``"cpu"``, ``"cuda"``, ``"cuda:K"`` or ``"mps"``."""
    dtype: object
    """A ``torch.dtype``."""

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def check_device_exists(name: str) -> None:
    """An explicitly named device this machine lacks is a ConfigError; ``auto`` and ``cpu`` always
    exist, so checking them imports nothing (torch takes seconds to import)."""
    if name not in ("auto", "cpu"):
        resolve_device(name)


def resolve_device(name: str) -> str:
    """``auto`` → the best device here; an explicit device this machine lacks is a ConfigError."""
    if name == "auto":
        if cuda_device_count():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if name.startswith("cuda"):
        count = cuda_device_count()
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if count == 0:
            raise ConfigError(f"`device` {name}: no CUDA device is available on this machine")
        if index >= count:
            raise ConfigError(f"`device` {name}: this machine has {count} CUDA device(s) (cuda:0…cuda:{count - 1})")
    if name == "mps" and not _mps_available():
        raise ConfigError("`device` mps: Apple's MPS backend is not available on this machine")
    return name


def resolve_dtype(name: str, device: str):
    """The torch dtype for ``name`` on ``device`` (``auto``: bf16 where supported on a GPU, else fp32)."""
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device == "mps" else torch.float32
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    if dtype == torch.float16 and device == "cpu":
        raise ConfigError("`dtype` float16 is not supported for training on a CPU; use float32 or bfloat16")
    return dtype


def use_device(device: str) -> None:
    """Make ``cuda:K`` the current CUDA device, so libraries that say just ``cuda`` use it."""
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(int(device.split(":", 1)[1]))
