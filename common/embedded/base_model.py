"""The embedded default's base model π₀: a tiny GPT-2 built here, from a seed, with no hub.

Without a model hub, the embedded default trains its own byte-level BPE tokenizer and a small
GPT-2-style LM on the bundled corpus (:mod:`common.embedded.corpus`). The build is seeded and cached
under ``$FAIRPOOL_HOME/base-models``; a cache entry carries a manifest with the weights'
digest, and an entry whose files are missing or whose digest does not match is rebuilt. Once
built it is an ordinary local model directory, loaded like any user's (:mod:`common.model.base`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from common.embedded.corpus import CORPUS_VERSION, corpus_lines
from common.storage.atomic import atomic_write
from common.storage.home import fairpool_home
from common.trust.canonical import json_sha256
from common.trust.digest import tensors_sha256

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
MANIFEST = "fairpool-base.json"


@dataclass(frozen=True)
class TinyModelConfig:
    """Hyper-parameters of the embedded base model; each field changes the cache key."""

    vocab_size: int = 600
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 96
    corpus_lines: int = 4000
    epochs: int = 6
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0

    def cache_key(self) -> str:
        return "tiny-gpt2-" + json_sha256({**asdict(self), "corpus": CORPUS_VERSION})[:12]


def default_base_model_dir(config: TinyModelConfig | None = None) -> Path:
    """Where the embedded base model built with ``config`` is cached."""
    return fairpool_home() / "base-models" / (config or TinyModelConfig()).cache_key()


def model_fingerprint(model) -> str:
    """Digest of a model's weights: the identity every owner must train on."""
    return tensors_sha256(
        {k: v.detach().to("cpu").float().numpy() for k, v in model.state_dict().items()}
    )


def _read_manifest(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def file_digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file of a build (the manifest aside), by name: what the manifest records."""
    import hashlib

    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(Path(directory).iterdir())
            if f.is_file() and f.name != MANIFEST and not f.name.startswith(".")}


def cached_model_is_valid(directory: Path) -> bool:
    """True when ``directory`` holds a complete build that matches its manifest.

    A manifest listing the build's file digests is checked by hashing the files (milliseconds;
    a resumed demo must not load torch for it). An older manifest, with only the weights'
    fingerprint, is checked by loading the model, and on success gains the file list.
    """
    manifest = _read_manifest(directory)
    if not manifest:
        return False
    if "files" in manifest:
        try:
            return file_digests(directory) == manifest["files"]
        except OSError:
            return False
    from common.model.base import load_base_model

    try:
        model, _ = load_base_model(directory)
    except Exception:  # any unreadable file means "rebuild", never a crash
        return False
    if model_fingerprint(model) != manifest.get("fingerprint"):
        return False
    try:
        upgraded = {**manifest, "files": file_digests(directory)}
        atomic_write(Path(directory) / MANIFEST, json.dumps(upgraded, indent=2).encode())
    except OSError:  # a read-only cache stays valid, only slower to check
        pass
    return True


def _train_tokenizer(lines: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )


def _pretrain(config: TinyModelConfig, tokenizer, lines: list[str], progress: Callable[[str], None]):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(config.seed)
    model_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=config.n_layer,
        n_embd=config.n_embd,
        n_head=config.n_head,
        n_positions=config.n_positions,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(model_config)
    texts = [line + EOS_TOKEN for line in lines]
    enc = tokenizer(texts, padding=True, truncation=True, max_length=config.n_positions, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    steps_per_epoch = (len(texts) + config.batch_size - 1) // config.batch_size
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=total)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    step = 0
    for epoch in range(config.epochs):
        order = torch.randperm(len(texts), generator=generator)
        for start in range(0, len(texts), config.batch_size):
            idx = order[start : start + config.batch_size]
            width = int(mask[idx].sum(1).max())
            out = model(input_ids=ids[idx, :width], attention_mask=mask[idx, :width], labels=labels[idx, :width])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
        progress(f"pretraining epoch {epoch + 1}/{config.epochs}: loss {out.loss.item():.3f}")
    model.eval()
    return model


def build_base_model(
    config: TinyModelConfig | None = None,
    directory: Path | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda _msg: None,
) -> Path:
    """Build (or reuse a valid cached build of) the embedded base model; return its directory.

    The build happens in a temporary sibling directory that is renamed into place, so an
    interrupted build never leaves a half-written model that later looks valid. Processes
    that need the same build at once (two first runs, parallel test workers) take turns on a
    lock beside it: the first builds, the others then find the valid cache.
    """
    config = config or TinyModelConfig()
    directory = Path(directory) if directory else default_base_model_dir(config)
    if not force and cached_model_is_valid(directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, however the process ends
        if not force and cached_model_is_valid(directory):
            return directory
        shipped = shipped_model_dir(config)
        if not force and shipped is not None:
            return _install_shipped(shipped, directory, progress)
        return _build(config, directory, progress)


SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
"""Builds that ship inside the package, by cache key: the same π₀ (and the README's numbers)
on every machine, since pretraining's floating point differs between machines."""


def shipped_model_dir(config: TinyModelConfig | None = None) -> Path | None:
    """The shipped build of ``config``, when the package carries one and it matches its manifest."""
    candidate = SHIPPED_DIR / (config or TinyModelConfig()).cache_key()
    return candidate if cached_model_is_valid(candidate) else None


@contextmanager
def _staged(directory: Path, prefix: str) -> Iterator[Path]:
    """A temporary sibling of ``directory`` to fill; renamed into its place only if the block
    succeeds, so an interrupted build or copy never leaves a half-written model that looks valid."""
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=directory.parent))
    try:
        yield staging
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _install_shipped(shipped: Path, directory: Path, progress: Callable[[str], None]) -> Path:
    """Copy the shipped build into the cache."""
    with _staged(directory, ".installing-") as staging:
        for source in shipped.iterdir():
            if source.is_file():
                shutil.copyfile(source, staging / source.name)
    progress(f"base model: the shipped build, copied to {directory}")
    return directory


def _build(config: TinyModelConfig, directory: Path, progress: Callable[[str], None]) -> Path:
    import torch

    started = time.perf_counter()
    lines = corpus_lines(config.corpus_lines, config.seed)
    progress(f"training tokenizer on {len(lines)} corpus lines")
    tokenizer = _train_tokenizer(lines, config.vocab_size)
    threads = torch.get_num_threads()
    try:
        model = _pretrain(config, tokenizer, lines, progress)
    finally:
        torch.set_num_threads(threads)
    with _staged(directory, ".building-") as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        manifest = {
            "builder": "fairpool-tiny-gpt2",
            "config": asdict(config),
            "corpus_version": CORPUS_VERSION,
            "fingerprint": model_fingerprint(model),
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        manifest["files"] = file_digests(staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    progress(f"base model ready in {time.perf_counter() - started:.1f}s at {directory}")
    return directory
