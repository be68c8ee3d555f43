"""Decoding a coalition's model token by token from composed logits (method.md §2–3, reward utility).

The model of a coalition ``S`` is never materialised: at every step the next-token
log-probabilities of the base π₀ (adapters disabled) and of each member's adapter are computed
and combined by the coalition's rule,

    z̃_S = Σ_{ℓ∈S} w_ℓ · log_softmax(z_ℓ) + w₀ · log_softmax(z₀)      (float32, -inf clamped)

with the weights of :func:`common.valuation.composition.coalition_weights`. One
:class:`CoalitionDecoder` holds a ``PeftModel`` with every owner's adapter loaded once and
decodes any coalition of them:

* **one forward per step** — rows are ``prompts × (|S|+1)`` (component-major: all prompts
  under the first component, then all under the next), each row routed to its adapter with
  PEFT's mixed-adapter batches (``adapter_names``; ``"__base__"`` = adapters disabled);
* **a KV cache per row** — the prompt is encoded once, later steps feed one token per row;
* **left padding** with the matching ``attention_mask`` and ``position_ids``, so a prompt
  decodes the same alone or in a batch;
* **the base row is skipped when its weight is 0** (``|S| = 1`` under ``sum``; every
  non-empty coalition under ``mean``/``size``), so ``S = ∅`` reads only π₀ and ``|S| = 1``
  only that owner — both decode exactly like the single model.

Sampling uses *common random numbers*: the uniform draw of prompt ``i`` at step ``t`` is a
function of ``(seed, i, t)`` only (:func:`uniform_draws`) and the token is picked by inverse CDF
over the (temperature-scaled, top-p filtered) distribution in vocabulary order. Every coalition
sees the same draws, so nearby coalition models produce mostly the same tokens and marginal
contributions are not drowned in sampling noise.

:func:`generate_sequential_naive` is the straightforward reference (one full forward per
component per step, no cache) kept for tests and the benchmark.
"""

from __future__ import annotations

import inspect
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.valuation.composition import BASE_TERM, DEFAULT_FLOOR, coalition_terms, coalition_weights

BASE = "__base__"  # PEFT's name for "adapters disabled" in a mixed-adapter batch
_DRAW_DOMAIN = 0xDEC0DE  # separates decoding draws from other uses of the same seed

__all__ = [
    "BASE",
    "CoalitionDecoder",
    "DecodeResult",
    "DecodingConfig",
    "compose_next_token",
    "generate_sequential_naive",
    "load_adapter_dirs",
    "save_adapter_dir",
    "export_adapter_dir",
    "select_tokens",
    "uniform_draws",
]


# --------------------------------------------------------------------------- configuration


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class DecodingConfig:
    """How a coalition's responses are decoded. Invalid values raise ``ValueError``."""

    max_new_tokens: int = 32
    """Most tokens generated per prompt (EOS ends a response earlier)."""
    temperature: float = 0.0
    """0 = greedy (argmax); otherwise sampling from ``softmax(z̃ / temperature)``."""
    top_p: float = 1.0
    """Nucleus sampling: keep the most probable tokens whose mass reaches ``top_p`` (1 = all)."""
    seed: int = 0
    """Seed of the common random numbers (the same draws for every coalition)."""
    use_cache: bool = True
    """Reuse keys/values across steps; ``False`` recomputes the whole sequence (reference path)."""
    batch_size: int = 64
    """Prompts per batch (each prompt takes ``|S|+1`` rows, fewer when the base is skipped)."""

    def __post_init__(self) -> None:
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer ≥ 1, got {self.max_new_tokens!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number ≥ 0 (0 = greedy), got {self.temperature!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) \
                or not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an integer ≥ 0, got {self.seed!r}")
        if not isinstance(self.use_cache, bool):
            raise ValueError(f"use_cache must be True or False, got {self.use_cache!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer ≥ 1, got {self.batch_size!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class DecodeResult:
    """Everything one :meth:`CoalitionDecoder.decode` call produced."""

    texts: list[str]
    """Decoded continuation of each prompt (new tokens only, EOS excluded)."""
    token_ids: list[list[int]]
    """The new token ids of each prompt (EOS excluded)."""
    draws: np.ndarray | None
    """Uniforms offered to prompt ``i`` at step ``t`` (``(n_prompts, max_new_tokens)``); None if greedy."""
    components: tuple[tuple[str, float], ...]
    """``(adapter name or "__base__", weight)`` of every model read, in composition order."""


# --------------------------------------------------------------------------- pure pieces


def uniform_draws(seed: int, prompt_indices: Sequence[int], steps: int) -> np.ndarray:
    """The common random numbers: ``U[k, t]`` in ``[0, 1)`` for prompt ``prompt_indices[k]`` at step ``t``.

    Each prompt has its own stream seeded by ``(seed, prompt index)``, so the draw depends on
    neither the coalition, nor the batch the prompt lands in, nor ``max_new_tokens`` (a longer
    decode extends the stream; its first steps are unchanged).
    """
    out = np.empty((len(prompt_indices), steps), dtype=np.float64)
    for k, i in enumerate(prompt_indices):
        out[k] = np.random.default_rng([_DRAW_DOMAIN, int(seed), int(i)]).random(steps)
    return out


def compose_next_token(logits, weights: Sequence[float], floor: float = DEFAULT_FLOOR):
    """Composed next-token scores ``Σ_k w_k · max(log_softmax(z_k), floor)`` in float32.

    The torch kernel of :func:`common.valuation.composition.coalition_terms` (whose terms give
    ``weights``), on the device where the logits are; the scorer's numpy kernel is
    :func:`common.valuation.composition.compose_logprobs`.

    ``logits`` has shape ``(K, B, V)`` (component ``k`` = row block ``k``), ``weights`` has
    ``K`` entries. The result (``(B, V)``) is not renormalised; since the weights sum to 1 it
    differs from the normalised composed log-probs by a per-row constant, so argmax and softmax
    are unaffected. A single component of weight 1 is returned bit for bit.
    """
    import torch

    if logits.shape[0] != len(weights):
        raise ValueError(f"{logits.shape[0]} logit blocks for {len(weights)} weights")
    logp = torch.log_softmax(logits.float(), dim=-1).clamp_min(floor)
    out = logp[0] * float(weights[0]) if weights[0] != 1.0 else logp[0].clone()
    for k in range(1, len(weights)):
        out.add_(logp[k], alpha=float(weights[k]))
    return out


def select_tokens(scores, temperature: float, top_p: float, u: np.ndarray | None):
    """Next token of each row: argmax when ``temperature == 0``, else inverse-CDF sampling.

    Sampling: ``p = softmax(scores / temperature)`` (float64); top-p keeps the most probable
    tokens (ties broken by vocabulary index) until their mass reaches ``top_p``; the token is
    the first index, in vocabulary order, whose cumulative kept mass exceeds ``u · total``.
    A token of zero kept probability can never be drawn.
    """
    import torch

    if temperature == 0:
        return torch.argmax(scores, dim=-1)
    if u is None:
        raise ValueError("sampling needs uniform draws")
    p = torch.softmax(scores.double() / float(temperature), dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(p, dim=-1, descending=True, stable=True)
        mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p
        keep_sorted = mass_before < top_p
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
        p = p * keep
    cdf = torch.cumsum(p, dim=-1)
    target = torch.as_tensor(np.asarray(u, dtype=np.float64), device=cdf.device)[:, None] * cdf[:, -1:]
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return idx.clamp_max(p.shape[-1] - 1)


# --------------------------------------------------------------------------- the decoder


def _forward_names(model) -> tuple[str, bool]:
    """Name of the KV-cache keyword of the underlying model and whether it takes ``logits_to_keep``.

    transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name still works with a
    deprecation warning); 4.x only knows ``past_key_values``.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    return cache_kw, "logits_to_keep" in params


class CoalitionDecoder:
    """Decode any coalition of the owners whose adapters ``model`` holds.

    ``model`` is a ``PeftModel`` with one LoRA adapter per name in ``owners`` (owner ``i`` of a
    coalition is ``owners[i]``); it is put in eval mode. ``rule`` and ``sizes`` are those of
    :func:`common.valuation.composition.coalition_weights`.
    """

    def __init__(self, model, tokenizer, owners: Sequence[str], rule: str = "sum",
                 sizes: Sequence[int] | None = None, floor: float = DEFAULT_FLOOR,
                 max_prompt_length: int = 0) -> None:
        self.model = model
        self.max_prompt_length = int(max_prompt_length)
        self.tokenizer = tokenizer
        self.owners = tuple(owners)
        if len(set(self.owners)) != len(self.owners):
            raise ValueError(f"owner names must be unique, got {list(self.owners)}")
        if BASE in self.owners:
            raise ValueError(f"{BASE!r} is reserved for the base model")
        loaded = set(getattr(model, "peft_config", {}) or {})
        missing = [o for o in self.owners if o not in loaded]
        if missing:
            raise ValueError(f"the model holds no adapter named {missing} (it has {sorted(loaded)})")
        self.rule = rule
        self.sizes = None if sizes is None else list(sizes)
        coalition_weights([], len(self.owners), rule, self.sizes)  # validates rule and sizes now
        if not math.isfinite(floor):
            raise ValueError(f"floor must be finite, got {floor}")
        self.floor = float(floor)
        model.eval()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token")
        eos = tokenizer.eos_token_id
        self.eos_ids = frozenset([] if eos is None else [int(eos)])
        self.start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        config = getattr(model, "config", None)
        self.max_positions = next((int(getattr(config, a)) for a in ("n_positions", "max_position_embeddings")
                                   if isinstance(getattr(config, a, None), int)), None)
        self._cache_kw, self._keep_kw = _forward_names(model)
        self.device = next(model.parameters()).device

    @classmethod
    def from_tensors(cls, spec, adapters: Mapping[str, Mapping[str, np.ndarray]], rule: str = "sum",
                     sizes: Sequence[int] | None = None, hardware=None) -> "CoalitionDecoder":
        """Load the spec's base model and wrap it with the received adapter tensors (one adapter per owner)."""
        from common.model.base import load_spec_model
        from common.model.lora import load_adapters

        base, tokenizer = load_spec_model(spec, hardware)
        return cls(load_adapters(base, spec, adapters), tokenizer, list(adapters), rule, sizes,
                   max_prompt_length=spec.max_prompt_length)

    # ------------------------------------------------------------------ coalition and prompts

    def components(self, members: Sequence[int]) -> tuple[tuple[str, float], ...]:
        """``(adapter name, weight)`` of every model the coalition reads, base first, zero weights left out."""
        members = [int(m) if _is_int(m) else m for m in members]
        return tuple((BASE if k == BASE_TERM else self.owners[k], weight)
                     for k, weight in coalition_terms(members, len(self.owners), self.rule, self.sizes))

    def encode(self, prompts: Sequence, max_new_tokens: int = 0) -> list[list[int]]:
        """Token ids of each prompt, tokenised as in training (:func:`common.model.tokenization.tokenize_prompt`:
        a Llama BOS included, a conversation through the chat template with the generation prompt).

        An empty prompt starts from the BOS (else EOS) token. A prompt too long for the model's
        context together with ``max_new_tokens`` keeps its last tokens.
        """
        from common.model.tokenization import tokenize_prompt

        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not one string")
        room = None
        if self.max_positions is not None:
            room = self.max_positions - max_new_tokens
            if room < 1:
                raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
                                 f"{self.max_positions}-token context")
        out = []
        for p in prompts:
            if not isinstance(p, (str, tuple, list)):
                raise TypeError(f"prompts must be strings or conversations, got {type(p).__name__}")
            ids = tokenize_prompt(self.tokenizer, p, self.max_prompt_length) if p else []
            if not ids:
                if self.start_id is None:
                    raise ValueError("an empty prompt needs a BOS or EOS token to start from")
                ids = [int(self.start_id)]
            out.append(ids[-room:] if room is not None else ids)
        return out

    def _left_pad(self, sequences: Sequence[Sequence[int]]):
        import torch

        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), int(self.pad_id), dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            if seq:
                ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
                mask[row, width - len(seq):] = 1
        return ids.to(self.device), mask.to(self.device)

    @staticmethod
    def _positions(mask):
        return (mask.cumsum(-1) - 1).clamp_min(0)

    def _forward(self, ids, mask, positions, names: list[str], cache=None, use_cache: bool = False):
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                  "adapter_names": names, "use_cache": use_cache}
        if use_cache and cache is not None:
            kwargs[self._cache_kw] = cache
        if self._keep_kw:
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs)
        new_cache = out[self._cache_kw] if use_cache else None
        return out.logits[:, -1, :], new_cache

    # ------------------------------------------------------------------ public API

    def next_token_logprobs(self, prompts: Sequence[str], members: Sequence[int],
                            generated_so_far: Sequence[Sequence[int]] | None = None):
        """Normalised composed log-probs ``(len(prompts), V)`` (float32) of the next token.

        The context of prompt ``i`` is its tokens followed by ``generated_so_far[i]`` (token ids).
        Equals ``log_softmax(Σ w_ℓ·max(log_softmax(z_ℓ), floor) + w₀·max(log_softmax(z₀), floor))``.
        """
        import torch

        contexts = self.encode(prompts)
        if not contexts:
            raise ValueError("give at least one prompt")
        if generated_so_far is not None:
            if len(generated_so_far) != len(contexts):
                raise ValueError("generated_so_far needs one token list per prompt")
            contexts = [c + [int(t) for t in g] for c, g in zip(contexts, generated_so_far)]
        components = self.components(members)
        ids, mask = self._left_pad(contexts)
        k, b = len(components), len(contexts)
        names = [name for name, _ in components for _ in range(b)]
        with torch.inference_mode():
            logits, _ = self._forward(ids.repeat(k, 1), mask.repeat(k, 1), self._positions(mask).repeat(k, 1), names)
            scores = compose_next_token(logits.reshape(k, b, -1), [w for _, w in components], self.floor)
            return torch.log_softmax(scores, dim=-1)

    def generate(self, prompts: Sequence[str], members: Sequence[int],
                 config: DecodingConfig | None = None) -> list[str]:
        """Continuation text of each prompt under coalition ``members`` (owner indices)."""
        return self.decode(prompts, members, config).texts

    def decode(self, prompts: Sequence[str], members: Sequence[int],
               config: DecodingConfig | None = None) -> DecodeResult:
        """Like :meth:`generate`, also returning token ids, the draws and the components read."""
        config = config or DecodingConfig()
        return self._run(prompts, members, config, self._decode_batch)

    def _run(self, prompts, members, config: DecodingConfig, batch_fn) -> DecodeResult:
        components = self.components(members)
        encoded = self.encode(prompts, config.max_new_tokens)
        draws = None if config.greedy else uniform_draws(config.seed, range(len(encoded)), config.max_new_tokens)
        tokens: list[list[int]] = []
        for lo in range(0, len(encoded), config.batch_size):
            chunk = encoded[lo: lo + config.batch_size]
            tokens += batch_fn(chunk, components, config,
                               None if draws is None else draws[lo: lo + len(chunk)])
        texts = [self.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
        return DecodeResult(texts, tokens, draws, components)

    def _step(self, logits, components, config: DecodingConfig, draws, t: int, b: int):
        scores = compose_next_token(logits.reshape(len(components), b, -1), [w for _, w in components], self.floor)
        return select_tokens(scores, config.temperature, config.top_p, None if draws is None else draws[:, t])

    def _decode_batch(self, chunk: list[list[int]], components, config: DecodingConfig, draws) -> list[list[int]]:
        """Decode one batch of prompts: one mixed-adapter forward per step over ``B·K`` rows."""
        import torch

        b, k = len(chunk), len(components)
        ids, mask = self._left_pad(chunk)
        names = [name for name, _ in components for _ in range(b)]
        ids, mask = ids.repeat(k, 1), mask.repeat(k, 1)
        positions = self._positions(mask)
        out: list[list[int]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool, device=self.device)
        eos = torch.tensor(sorted(self.eos_ids), dtype=torch.long, device=self.device)
        fill = int(next(iter(sorted(self.eos_ids)), self.pad_id))
        cache = None
        with torch.inference_mode():
            step_ids, step_pos = ids, positions
            for t in range(config.max_new_tokens):
                if config.use_cache:
                    logits, cache = self._forward(step_ids, mask, step_pos, names, cache, use_cache=True)
                else:
                    logits, _ = self._forward(ids, mask, positions, names)
                chosen = self._step(logits, components, config, draws, t, b)
                chosen = torch.where(done, torch.full_like(chosen, fill), chosen)
                finished_now = torch.isin(chosen, eos) & ~done
                for row in torch.nonzero(~done & ~finished_now).flatten().tolist():
                    out[row].append(int(chosen[row]))
                done |= finished_now
                if bool(done.all()) or t + 1 == config.max_new_tokens:
                    break
                step_ids = chosen.repeat(k)[:, None]
                step_pos = positions[:, -1:] + 1
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                ids = torch.cat([ids, step_ids], dim=1)
                positions = torch.cat([positions, step_pos], dim=1)
        return out


# --------------------------------------------------------------------------- naive reference


def _activate(model, name: str) -> None:
    """``set_adapter`` without making the adapter trainable (PEFT ≥ 0.17 takes ``inference_mode``)."""
    if "inference_mode" in inspect.signature(model.set_adapter).parameters:
        model.set_adapter(name, inference_mode=True)
    else:
        model.set_adapter(name)


def generate_sequential_naive(decoder: CoalitionDecoder, prompts: Sequence[str], members: Sequence[int],
                              config: DecodingConfig | None = None) -> list[str]:
    """Reference decoder: each step, one full forward per component (``set_adapter`` /
    ``disable_adapter``), no KV cache. Same composition, draws and selection as the decoder,
    so it must produce the same tokens; it exists for tests and the benchmark.
    """
    import torch

    model = decoder.model
    config = config or DecodingConfig()

    def batch_fn(chunk, components, cfg, draws):
        b = len(chunk)
        ids, mask = decoder._left_pad(chunk)
        out: list[list[int]] = [[] for _ in range(b)]
        done = [False] * b
        previous = model.active_adapter
        try:
            with torch.inference_mode():
                for t in range(cfg.max_new_tokens):
                    positions = decoder._positions(mask)
                    blocks = []
                    for name, _ in components:
                        if name == BASE:
                            with model.disable_adapter():
                                logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
                        else:
                            _activate(model, name)
                            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
                        blocks.append(logits[:, -1, :])
                    chosen = decoder._step(torch.cat(blocks), components, cfg, draws, t, b).tolist()
                    for row, tok in enumerate(chosen):
                        if done[row]:
                            continue
                        if tok in decoder.eos_ids:
                            done[row] = True
                        else:
                            out[row].append(int(tok))
                    if all(done):
                        break
                    nxt = torch.tensor([[tok] for tok in chosen], dtype=torch.long, device=ids.device)
                    ids = torch.cat([ids, nxt], dim=1)
                    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        finally:
            _activate(model, previous)
        return out

    return decoder._run(prompts, members, config, batch_fn).texts


# --------------------------------------------------------------------------- adapter directories


def load_adapter_dirs(base_model: str, adapters: Mapping[str, str], *, chat_template: str = "", hardware=None):
    """Load ``base_model`` and each PEFT adapter directory under its name: ``(PeftModel, tokenizer)``.

    A directory may also hold the adapter in PEFT's nested layout (``DIR/NAME/adapter_config.json``).
    Every adapter is checked first (:func:`common.model.adapter_files.check_adapter_dirs`): a missing or
    unreadable one, or one trained for another base model, raises a one-line
    :class:`~common.errors.ConfigError` (a user mistake, not a bug) before the base model loads.
    """
    from peft import PeftModel

    from common.model.adapter_files import check_adapter_dirs
    from common.model.base import load_base_model

    if not adapters:
        raise ValueError("give at least one adapter directory")
    checked = check_adapter_dirs(adapters, str(base_model))
    model, tokenizer = load_base_model(base_model, chat_template=chat_template, hardware=hardware)
    peft_model = None
    for name, adapter in checked.items():
        path = Path(adapter.path)  # the directory holding adapter_config.json (nested layout resolved)
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)
        else:
            peft_model.load_adapter(str(path), adapter_name=name, is_trainable=False)
    assert peft_model is not None, "no adapter to load"  # callers pass at least one
    peft_model.eval()
    return peft_model, tokenizer


def save_adapter_dir(base_model_path: str, spec, name: str, tensors: Mapping[str, np.ndarray],
                     out_dir: str | Path) -> Path:
    """Write adapter ``name`` (received ``tensors``) as a PEFT directory ``out_dir``; return it."""
    from common.model.base import load_base_model
    from common.model.lora import load_adapters

    base, _ = load_base_model(base_model_path)
    return export_adapter_dir(load_adapters(base, spec, {name: tensors}), name, out_dir)


def export_adapter_dir(peft_model, name: str, out_dir: str | Path) -> Path:
    """Write adapter ``name`` of an already loaded ``peft_model`` as a PEFT directory ``out_dir``.

    ``out_dir/adapter_config.json`` and the weights sit directly in ``out_dir`` (PEFT would
    nest a non-default adapter in ``out_dir/name/``), so :func:`load_adapter_dirs` reads it back.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".adapter-", dir=out.parent))
    try:
        peft_model.save_pretrained(str(staging), selected_adapters=[name])
        source = staging if (staging / "adapter_config.json").is_file() else staging / name
        if not (source / "adapter_config.json").is_file():
            raise RuntimeError(f"PEFT wrote no adapter_config.json for {name!r} under {staging}")
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for item in source.iterdir():
            if item.is_file():
                shutil.move(str(item), str(out / item.name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
