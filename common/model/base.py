"""The base model π₀: loading and checking any local Hugging Face causal LM, and its identity.

Every command that accepts a base model accepts either the embedded one
(:mod:`common.embedded.base_model`, built into an ordinary model directory) or a user's local
model directory: :func:`load_base_model` is the one path, :func:`check_model_dir` its
pre-flight check, :func:`weights_fingerprint` its identity.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.errors import ConfigError, FairPoolError, one_line

CAUSAL_LM_HINT = "a Hugging Face causal language model directory (config.json, weights, tokenizer files)"


def resolve_model_dir(name_or_path: str | os.PathLike) -> str:
    """An existing local model directory as an absolute path; anything else is a ConfigError.

    Resolved before any job is written, because a relative path reaching a Flower subprocess is
    resolved against another working directory and then looks like a hub id (stack notes).
    There is no hub here, so a name that is not a directory is a mistake, said as such.
    """
    local = Path(os.fspath(name_or_path)).expanduser()
    if not local.exists():
        raise ConfigError(f"base model {name_or_path}: no such directory (expected {CAUSAL_LM_HINT})")
    if not local.is_dir():
        raise ConfigError(f"base model {name_or_path}: not a directory (expected {CAUSAL_LM_HINT})")
    return str(local.resolve())


def check_model_dir(name_or_path: str | os.PathLike) -> str:
    """Check, without loading weights, that a directory holds a causal LM and its tokenizer.

    Returns the resolved path. A missing ``config.json``, a model type that is not a causal LM
    (a classifier, an encoder, a seq2seq model) or a folder without tokenizer files each give
    one line naming the directory, before any work starts.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = resolve_model_dir(name_or_path)
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"base model {path}: no config.json (expected {CAUSAL_LM_HINT})")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"base model {path}: unreadable config.json: {one_line(exc, 200)}") from None
    model_type = getattr(config, "model_type", "")
    architectures = list(getattr(config, "architectures", None) or [])
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
            architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)):
        kind = ", ".join(architectures) or model_type or "unknown"
        raise ConfigError(f"base model {path}: not a causal language model ({kind}); FairPool needs a model "
                          "that AutoModelForCausalLM loads (GPT-2, Llama, Qwen2, Mistral, …)")
    try:
        load_tokenizer(path)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - tokenizer loading raises many types for a bad folder
        raise ConfigError(f"base model {path}: cannot load its tokenizer: {one_line(exc, 200)}") from None
    return path


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def load_tokenizer(path: str, chat_template: str = ""):
    """The model's tokenizer, with a pad token (DPO batches need one) and the spec's chat template."""
    from transformers import AutoTokenizer

    if Path(path).is_dir() and not any((Path(path) / name).is_file() for name in _TOKENIZER_FILES):
        raise ConfigError(f"base model {path}: no tokenizer files (tokenizer.json or tokenizer_config.json); "
                          "save the tokenizer next to the model with tokenizer.save_pretrained(DIR)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def weights_fingerprint(directory: str | os.PathLike) -> str:
    """SHA-256 over a model directory's weight files: π₀'s identity, whatever dtype loads it.

    Hashing the files rather than loaded tensors means an owner training in bfloat16 on a GPU
    and a coordinator scoring in float32 on a CPU agree that they hold the same π₀ (a state
    dict hashed after a lossy cast would not). Empty when the folder has no weight files.
    """
    import hashlib

    root = Path(directory)
    files = sorted({f for pattern in WEIGHT_PATTERNS for f in root.glob(pattern) if f.is_file()})
    if not files:
        return ""
    total = hashlib.sha256()
    for file in files:
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        total.update(f"{file.name}\0{digest.hexdigest()}\n".encode())
    return total.hexdigest()


def load_base_model(name_or_path: str | os.PathLike, *, chat_template: str = "", hardware=None):
    """Load a causal LM and its tokenizer from a local directory: ``(model, tokenizer)``.

    ``hardware`` (a :class:`common.config.hardware.Hardware`) places the model and picks its dtype,
    resolved on this machine (``auto``: a GPU when there is one); ``None`` loads on the CPU in
    float32, for light work such as shape probes. ``chat_template`` (the spec's) replaces the
    tokenizer's own when non-empty. The model is in eval mode.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-call weight-loading bars drown the run's own progress
    source = resolve_model_dir(name_or_path)
    tokenizer = load_tokenizer(source, chat_template)
    device, dtype = "cpu", "float32"
    if hardware is not None:
        from common.config.hardware import use_device

        resolved = hardware.resolve()
        device, dtype = resolved.device, resolved.dtype
        use_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise FairPoolError(f"cannot load base model {name_or_path}: {one_line(exc, 200)}") from exc
    if device != "cpu":
        model.to(device)  # type: ignore[arg-type]  # transformers' stub for `to` omits device strings
    model.eval()
    return model, tokenizer


def load_spec_model(spec, hardware=None):
    """:func:`load_base_model` for a training spec: its base model with its chat template."""
    return load_base_model(spec.base_model, chat_template=spec.chat_template, hardware=hardware)
