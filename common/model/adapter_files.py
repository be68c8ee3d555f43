"""A PEFT LoRA adapter directory on disk: reading it, and is it one this job can value?

Owners who already fine-tuned an adapter (``save_pretrained``) are valued without retraining:
the coordinator (``fairpool value --adapter NAME=DIR``), an owner's ClientApp (``adapter-path``
in its node config) and ``fairpool generate --adapter`` all read the directory here, and check
it here, so "an adapter for another base model or another LoRA setup" is one clear line
everywhere rather than a PEFT traceback (or, worse, an adapter silently loaded mis-scaled).

Tensors are keyed exactly as :func:`common.model.lora.adapter_tensors` keys them: PEFT's
``get_peft_model_state_dict`` names, which are also the keys PEFT writes into
``adapter_model.safetensors``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError, one_line

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")

__all__ = ["AdapterFile", "adapter_spec", "check_adapter_compatible", "check_adapter_dirs",
           "expected_shapes_for", "find_adapter_dir", "read_adapter_dir"]


@dataclass(frozen=True)
class AdapterFile:
    """A LoRA adapter read from disk: the directory holding it, its config, its float32 tensors."""

    path: str
    config: dict
    tensors: dict[str, np.ndarray]

    @property
    def rank(self) -> int:
        return int(self.config.get("r", 0) or 0)

    @property
    def alpha(self) -> float:
        return float(self.config.get("lora_alpha", 0) or 0)

    @property
    def target_modules(self) -> list[str] | str | None:
        """PEFT's ``target_modules``: a list of names, a regular expression, or None."""
        targets = self.config.get("target_modules")
        return sorted(targets) if isinstance(targets, (list, tuple, set)) else targets

    @property
    def base_model(self) -> str:
        """``base_model_name_or_path`` of ``adapter_config.json`` (``""`` when not recorded)."""
        return str(self.config.get("base_model_name_or_path") or "")


def find_adapter_dir(path: str | Path, name: str = "") -> Path:
    """The directory holding ``adapter_config.json``: ``path`` itself or PEFT's nested ``path/NAME/``.

    PEFT saves a non-default adapter under ``DIR/NAME/``; ``name`` picks it when several are
    nested, else the only nested one is taken.
    """
    given = Path(path).expanduser()
    if not given.exists():
        raise ConfigError(f"adapter {path}: no such directory")
    if not given.is_dir():
        raise ConfigError(f"adapter {path}: not a directory (expected a PEFT adapter directory with {CONFIG_FILE})")
    if (given / CONFIG_FILE).is_file():
        return given
    if name and (given / name / CONFIG_FILE).is_file():
        return given / name
    nested = sorted(p for p in given.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())
    if len(nested) == 1:
        return nested[0]
    if nested:
        raise ConfigError(f"adapter {path}: holds several adapters ({', '.join(p.name for p in nested)}); "
                          f"give one of them, e.g. {nested[0]}")
    raise ConfigError(f"adapter {path}: no {CONFIG_FILE} (not a PEFT adapter directory saved with save_pretrained)")


def _read_weights(directory: Path, shown: str) -> dict[str, np.ndarray]:
    import torch

    weights = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
    if weights is None:
        raise ConfigError(f"adapter {shown}: no adapter weights ({' or '.join(WEIGHT_FILES)})")
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights), device="cpu")
        else:  # weights_only: unpickling an untrusted .bin must never run code
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - safetensors and torch raise many types for a corrupt file
        raise ConfigError(f"adapter {shown}: cannot read {weights.name}: {one_line(exc, 200)}") from None
    if not isinstance(state, Mapping) or not state:
        raise ConfigError(f"adapter {shown}: {weights.name} holds no tensors")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"adapter {shown}: {weights.name}: entry {key!r} is not a tensor")
        out[str(key)] = value.detach().to("cpu", torch.float32).numpy().copy()
    return out


def read_adapter_dir(path: str | Path, name: str = "") -> AdapterFile:
    """Read a PEFT LoRA adapter directory (``adapter_config.json`` + safetensors or ``.bin`` weights).

    Every problem (missing directory, no config, not a LoRA adapter, unreadable weights) is a
    :class:`~common.errors.ConfigError` of one line naming the directory.
    """
    directory = find_adapter_dir(path, name)
    shown = str(path)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"adapter {shown}: unreadable {CONFIG_FILE}: {one_line(exc, 200)}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"adapter {shown}: {CONFIG_FILE} is not a JSON object")
    kind = str(config.get("peft_type") or "")
    if kind.upper() != "LORA":
        raise ConfigError(f"adapter {shown}: a PEFT {kind or 'untyped'} adapter, not LoRA (peft_type); "
                          "FairPool values LoRA adapters only")
    return AdapterFile(str(directory.resolve()), config, _read_weights(directory, shown))


# --------------------------------------------------------------------------- compatibility


def _spec_targets(spec, base_model_dir: str) -> list[str] | None:
    """The modules the spec's LoraConfig adapts on this base (PEFT's per-architecture default if unset)."""
    if spec.target_module_list:
        return sorted(spec.target_module_list)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    try:
        model_type = json.loads((Path(base_model_dir) / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError):
        return None
    defaults = DEFAULTS.get(model_type)
    return sorted(defaults) if defaults else None


def _targets_text(targets) -> str:
    return ",".join(targets) if isinstance(targets, list) else str(targets)


def _names_other_base(adapter: AdapterFile, spec, base_model_dir: str) -> bool:
    """Whether ``base_model_name_or_path`` names another base than ``base_model_dir``.

    A local directory counts as the same base when it is the same directory or holds the same
    weight files (a copy); any other name, when its last path component differs from the base
    directory's name (a hub id ``org/model`` matches a local ``…/model``).
    """
    named = adapter.base_model
    if not named:
        return False
    base = Path(base_model_dir).expanduser().resolve()
    local = Path(named).expanduser()
    if local.is_dir():
        if local.resolve() == base:
            return False
        from common.model.base import weights_fingerprint

        theirs = weights_fingerprint(local)
        ours = (spec.base_fingerprint if spec is not None and Path(spec.base_model).resolve() == base else "") \
            or weights_fingerprint(base)
        return not (theirs and theirs == ours)
    last = named.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return last.casefold() != base.name.casefold()


def check_adapter_compatible(adapter: AdapterFile, spec, expected_shapes: Mapping[str, tuple[int, ...]],
                             base_model_dir: str) -> None:
    """Refuse, in one :class:`ConfigError` line, an adapter for another base or another LoRA setup.

    Every owner's adapter is loaded with the spec's ``LoraConfig``, so its rank, α and target
    modules must be the spec's (an α mismatch would load silently mis-scaled); its tensors must
    have exactly the names and shapes ``expected_shapes`` (:func:`common.model.lora.expected_adapter_shapes`
    or :func:`expected_shapes_for`) gives for the spec on ``base_model_dir``: that is the real
    test of the base. ``base_model_name_or_path`` naming another base is refused too (same-shaped
    models, e.g. a base and its instruct variant, differ only there). No model is loaded here.
    """
    where = f"adapter {adapter.path}"
    if adapter.rank != spec.lora_r:
        raise ConfigError(f"{where}: LoRA rank {adapter.rank} but the job's spec has `lora_r` {spec.lora_r}; "
                          f"value it with `lora_r` {adapter.rank}")
    if adapter.alpha != spec.lora_alpha:
        alpha = int(adapter.alpha) if float(adapter.alpha).is_integer() else adapter.alpha
        raise ConfigError(f"{where}: LoRA alpha {alpha} but the job's spec has `lora_alpha` {spec.lora_alpha}; "
                          f"value it with `lora_alpha` {alpha}")
    theirs, ours = adapter.target_modules, _spec_targets(spec, base_model_dir)
    if ours is not None and theirs != ours:
        raise ConfigError(f"{where}: LoRA target modules {_targets_text(theirs)} but the job's spec targets "
                          f"{_targets_text(ours)}; value it with `target_modules` {_targets_text(theirs)}")
    for option, what in (("use_dora", "DoRA"), ("use_rslora", "rank-stabilised LoRA (use_rslora)")):
        if adapter.config.get(option):
            raise ConfigError(f"{where}: a {what} adapter; FairPool composes plain LoRA adapters only")
    for option in ("rank_pattern", "alpha_pattern"):
        if adapter.config.get(option):
            raise ConfigError(f"{where}: per-module ranks or alphas ({option}); FairPool loads every adapter "
                              "with one rank and one alpha")
    other = _names_other_base(adapter, spec, base_model_dir)
    names = f" (its {CONFIG_FILE} names base model {adapter.base_model})" if other else ""
    missing = sorted(set(expected_shapes) - set(adapter.tensors))
    extra = sorted(set(adapter.tensors) - set(expected_shapes))
    if missing or extra:
        raise ConfigError(f"{where}: tensor names do not match what the base model {base_model_dir} expects "
                          f"(missing {missing[:2]}, unexpected {extra[:2]}): trained for another base model "
                          f"or other target modules?{names}")
    for key, want in expected_shapes.items():
        got = tuple(adapter.tensors[key].shape)
        if got != tuple(want):
            raise ConfigError(f"{where}: tensor {key} has shape {got}, the base model {base_model_dir} expects "
                              f"{tuple(want)}: trained for another base model?{names}")
    if other:
        raise ConfigError(f"{where}: trained on base model {adapter.base_model} ({CONFIG_FILE} "
                          f"base_model_name_or_path), not on this job's base model {base_model_dir}")


def adapter_spec(adapter: AdapterFile, base_model_dir: str):
    """A training spec whose LoRA setup is the adapter's own (for checks without a job spec)."""
    from common.config.spec import TrainingSpec

    targets = adapter.target_modules
    alpha = adapter.alpha
    try:
        return TrainingSpec(base_model=str(base_model_dir), lora_r=adapter.rank,
                            lora_alpha=int(alpha) if alpha.is_integer() else alpha,  # type: ignore[arg-type]
                            target_modules=",".join(targets) if isinstance(targets, list) else "")
    except ConfigError as exc:
        raise ConfigError(f"adapter {adapter.path}: unusable LoRA settings in {CONFIG_FILE}: {exc}") from None


def expected_shapes_for(spec, base_model_dir: str | None = None) -> dict[str, tuple[int, ...]]:
    """:func:`common.model.lora.expected_adapter_shapes` without loading weights (a meta-device probe).

    Falls back to loading the model on the CPU if the architecture cannot be built on the meta
    device. Target modules the base does not have are a :class:`ConfigError`.
    """
    import warnings

    import torch
    from peft import get_peft_model, get_peft_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    from common.model.lora import expected_adapter_shapes, lora_config

    directory = str(base_model_dir or spec.base_model)
    fallback: Exception
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory))
            probe = get_peft_model(model, lora_config(spec, model))
            return {k: tuple(v.shape) for k, v in get_peft_model_state_dict(probe).items()}
    except ValueError as exc:
        if "target modules" in str(exc).lower() or "target_modules" in str(exc).lower():
            raise ConfigError(f"LoRA target modules {spec.target_modules or '(default)'} not found in base model "
                              f"{directory}: {one_line(exc, 200)}") from None
        fallback = exc
    except Exception as exc:  # noqa: BLE001 - some architectures cannot be built on the meta device
        fallback = exc
    from common.model.base import load_base_model

    try:
        model, _ = load_base_model(directory)
        return expected_adapter_shapes(spec, model)
    except ValueError as exc:
        raise ConfigError(f"LoRA setup of spec on base model {directory}: {one_line(exc, 200)} "
                          f"(probe: {one_line(fallback, 200)})") from None


def check_adapter_dirs(adapters: Mapping[str, str], base_model_dir: str, spec=None) -> dict[str, AdapterFile]:
    """Read and check every ``name → directory``; the first problem is one :class:`ConfigError` line.

    With a ``spec`` (``fairpool value``) every adapter must have the spec's LoRA setup; without
    one (``fairpool generate``) each is checked against the base under its own LoRA setup.
    Expected shapes are computed once per distinct LoRA setup, without loading weights.
    """
    shapes: dict[tuple, dict[str, tuple[int, ...]]] = {}
    out = {}
    for name, directory in adapters.items():
        adapter = read_adapter_dir(directory, name)
        own = spec if spec is not None else adapter_spec(adapter, base_model_dir)
        key = (own.lora_r, own.lora_alpha, own.target_modules)
        if key not in shapes:
            shapes[key] = expected_shapes_for(own, base_model_dir)
        check_adapter_compatible(adapter, own, shapes[key], str(base_model_dir))
        out[name] = adapter
    return out
