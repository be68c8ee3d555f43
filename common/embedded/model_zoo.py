"""Locally built random-init models of real Hugging Face architectures (no hub needed).

FairPool's embedded base model (:mod:`common.model.base`) is a tiny GPT-2. Tests, benchmarks and
users without a model hub also need *real* architectures — Llama, Qwen2, Mistral, with their
rotary embeddings, grouped-query attention, RMSNorm, BOS conventions and chat templates — to
exercise the whole train → score → compose → decode path the way it runs on hub checkpoints.
This module builds tiny (or benchmark-sized) random-init causal LMs plus matching tokenizers
and saves them as ordinary ``save_pretrained`` directories, which
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load like any
downloaded checkpoint::

    from common.embedded.model_zoo import ZooModelConfig, build_zoo_model

    path = build_zoo_model(tmp / "llama", ZooModelConfig(architecture="llama", chat_template=True))
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)

What gets built:

* **Tokenizer** — a byte-level BPE trained with the ``tokenizers`` library on a small corpus
  (by default a few hundred generated English-ish sentences, seeded by ``config.seed``),
  wrapped in :class:`transformers.PreTrainedTokenizerFast`. Special tokens: ``<unk>`` (id 0),
  ``<s>`` (BOS, id 1), ``</s>`` (EOS, id 2), ``<pad>`` (id 3), and with a chat template also
  ``<|im_start|>`` / ``<|im_end|>`` (ids 4, 5; ``<|im_end|>`` is then the EOS token, as in
  Qwen2). BOS-adding (Llama-style) tokenizers carry a ``TemplateProcessing`` post-processor
  (``<s> $A``) *and* ``add_bos_token=True`` in ``tokenizer_config.json``, so BOS is prepended by
  default, not with ``add_special_tokens=False``. transformers 5 drops ``add_bos_token`` from
  a saved ``tokenizer_config.json`` (``tokenizer.json`` is the truth), so after loading,
  ``tokenizer.add_bos_token`` reads ``False`` while the post-processor still adds BOS; do not
  set ``add_bos_token``/``add_eos_token`` on a loaded tokenizer (that rebuilds the
  post-processor from those flags).
* **Pre-tokenisation** — GPT-2's byte-level regex, except for ``qwen2``: transformers always
  loads a qwen2 checkpoint's tokenizer as ``Qwen2Tokenizer``, which rebuilds Qwen's pipeline
  (NFC, Qwen's split regex with single digits, byte-level) around the saved vocab and merges,
  so the qwen2 tokenizer is *trained* with that pipeline and loads unchanged.
* **Vocabulary padding** — BPE training on a small corpus stops far below a big vocabulary
  (49,152 for the SmolLM shape). The BPE *model vocabulary* is then padded with filler entries
  ``<zoo_filler_N>`` that no merge produces, so they are never emitted by encoding (they are
  not added tokens either, so they never match raw text). Hence ``len(tokenizer) ==
  config.vocab_size == model.config.vocab_size`` always: the embedding matrix has exactly the
  requested size, and the tokenizer covers all of it.
* **Chat template** (``chat_template=True``) — ChatML like Qwen2's:
  ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, and ``add_generation_prompt``
  appends ``<|im_start|>assistant\\n``. The prompt rendered alone with the generation prompt is
  an exact prefix (as text and as token ids) of prompt + completion, which TRL's
  :func:`trl.data_utils.apply_chat_template` and DPO tokenisation rely on. A BOS-adding
  tokenizer's template starts with ``{{ bos_token }}`` (as Llama 3's does), since chat
  templates are tokenised with ``add_special_tokens=False``.
* **Model** — ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` /
  ``MistralForCausalLM``, float32, randomly initialised under ``torch.manual_seed(seed)``
  (inside a forked RNG: the caller's global RNG state is untouched), with BOS/EOS/PAD ids in
  the config and the generation config, dropout off, and word embeddings tied as the
  architecture's small checkpoints usually do (GPT-2, Qwen2: tied; Llama, Mistral: untied;
  override with ``tie_word_embeddings``). Weights are saved as safetensors.

Same config and corpus ⇒ byte-identical tokenizer files and identical weights.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ARCHITECTURES = ("gpt2", "llama", "qwen2", "mistral")

UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
FILLER_FORMAT = "<zoo_filler_{}>"
MANIFEST = "fairpool-zoo.json"
"""Written into every built directory; marks it as ours (a rebuild may then replace it)."""

_BYTE_ALPHABET = 256
_BOS_BY_DEFAULT = {"gpt2": False, "llama": True, "qwen2": False, "mistral": True}
_TIED_BY_DEFAULT = {"gpt2": True, "llama": False, "qwen2": True, "mistral": False}

QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2's pre-tokenisation split (as in ``transformers.models.qwen2.tokenization_qwen2``)."""

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""Qwen2-style ChatML (without Qwen's default system message)."""

CHATML_TEMPLATE_WITH_BOS = "{{- bos_token }}" + CHATML_TEMPLATE


@dataclass(frozen=True)
class ZooModelConfig:
    """Shape and tokenizer conventions of one zoo model; same config ⇒ same files."""

    architecture: str = "llama"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2  # ignored by gpt2
    intermediate_size: int = 128  # ignored by gpt2 (uses 4*hidden)
    vocab_size: int = 512  # exact: BPE-trained, then padded with unreachable filler entries
    max_positions: int = 512
    chat_template: bool = False  # give the tokenizer a ChatML (Qwen2-like) chat template
    add_bos: bool | None = None  # None = architecture default (llama/mistral: True, others: False)
    seed: int = 0
    tie_word_embeddings: bool | None = None  # None = architecture default (gpt2/qwen2 tied)

    @property
    def adds_bos(self) -> bool:
        return _BOS_BY_DEFAULT[self.architecture] if self.add_bos is None else self.add_bos

    @property
    def ties_embeddings(self) -> bool:
        if self.tie_word_embeddings is None:
            return _TIED_BY_DEFAULT[self.architecture]
        return self.tie_word_embeddings

    @property
    def special_tokens(self) -> list[str]:
        """The special tokens in id order (ids 0, 1, ...)."""
        specials = [UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN]
        return specials + [IM_START, IM_END] if self.chat_template else specials

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}")
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                     "max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.architecture != "gpt2" and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        minimum = _BYTE_ALPHABET + len(self.special_tokens)
        if self.vocab_size < minimum:
            raise ValueError(f"vocab_size {self.vocab_size} is below the byte alphabet plus special "
                             f"tokens ({minimum})")


def smollm_135m_shaped(**overrides) -> ZooModelConfig:
    """The shape of SmolLM-135M (Llama, tied embeddings): about 134.5 M parameters."""
    shape = dict(architecture="llama", hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                 intermediate_size=1536, vocab_size=49152, max_positions=2048, tie_word_embeddings=True)
    return ZooModelConfig(**{**shape, **overrides})


def llama_25m_shaped(**overrides) -> ZooModelConfig:
    """A Llama of about 25.8 M parameters (hidden 512, 6 layers, GQA 8/4, vocab 8192, untied)."""
    shape = dict(architecture="llama", hidden_size=512, num_layers=6, num_heads=8, num_kv_heads=4,
                 intermediate_size=1376, vocab_size=8192, max_positions=1024, tie_word_embeddings=False)
    return ZooModelConfig(**{**shape, **overrides})


# --------------------------------------------------------------------------- corpus

_NOUNS = ("river", "garden", "teacher", "market", "window", "letter", "mountain", "city", "friend",
          "question", "answer", "model", "dataset", "owner", "story", "kitchen", "library", "train",
          "morning", "evening", "village", "doctor", "student", "engine", "forest", "bridge", "song",
          "painting", "computer", "machine", "language", "review", "product", "service", "movie",
          "book", "game", "team", "price", "value", "reward", "weather", "coffee", "problem", "idea")
_ADJECTIVES = ("quiet", "bright", "old", "new", "kind", "rude", "helpful", "careful", "slow", "quick",
               "warm", "cold", "small", "large", "honest", "strange", "gentle", "harsh", "clear",
               "lovely", "awful", "wonderful", "terrible", "useful", "simple", "fair", "happy", "sad")
_VERBS = ("finds", "opens", "answers", "helps", "builds", "writes", "reads", "follows", "likes",
          "watches", "carries", "explains", "improves", "changes", "remembers", "visits", "shares")
_BASE_VERBS = ("find", "open", "answer", "help", "build", "write", "read", "follow", "like", "watch",
               "carry", "explain", "improve", "change", "remember", "visit", "share")
_ADVERBS = ("slowly", "quickly", "happily", "carefully", "today", "again", "often", "rarely",
            "together", "quietly", "kindly", "well", "badly", "early", "late")
_PLACES = ("the park", "the station", "the old town", "the market", "the school", "the lab", "home",
           "the harbour", "the museum", "the office")
_ROLES = ("user", "assistant", "system")
_TEMPLATES = (
    "The {adj} {noun} {verb} the {noun2} {adv}.",
    "A {adj} {noun} {verb} a {adj2} {noun2} near {place}.",
    "Why does the {noun} {base} the {noun2}?",
    "Please {base} the {adj} {noun} before the {noun2} arrives.",
    "I think the {noun} is {adj}, but the {noun2} is {adj2}.",
    "There are {num} {noun}s in {place}, and {num2} of them are {adj}.",
    "{role}: Can you {base} the {noun}? {role2}: Yes, the {noun} is {adj}.",
    "We {base} the {noun} {adv} because it is {adj}.",
    "In {year}, the {adj} {noun} {verb} {num} {noun2}s.",
    "\"The {noun} is {adj}!\" said the {noun2}, and everyone {verb2} it {adv}.",
)


def default_corpus(seed: int = 0, lines: int = 400) -> list[str]:
    """A few hundred generated English-ish sentences (deterministic in ``seed``)."""
    rng = random.Random(f"fairpool-zoo-corpus-{seed}")
    out = []
    for _ in range(lines):
        template = rng.choice(_TEMPLATES)
        out.append(template.format(
            adj=rng.choice(_ADJECTIVES), adj2=rng.choice(_ADJECTIVES), noun=rng.choice(_NOUNS),
            noun2=rng.choice(_NOUNS), verb=rng.choice(_VERBS), verb2=rng.choice(_VERBS),
            base=rng.choice(_BASE_VERBS), adv=rng.choice(_ADVERBS), place=rng.choice(_PLACES),
            num=rng.randint(2, 99), num2=rng.randint(1, 9), year=rng.randint(1900, 2030),
            role=rng.choice(_ROLES), role2=rng.choice(_ROLES),
        ))
    return out


# --------------------------------------------------------------------------- tokenizer

def build_zoo_tokenizer(config: ZooModelConfig = ZooModelConfig(), corpus: Sequence[str] | None = None):
    """The zoo tokenizer of ``config`` (a ``PreTrainedTokenizerFast``), not saved."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    config.validate()
    lines = list(default_corpus(config.seed) if corpus is None else corpus)
    specials = config.special_tokens
    tok = Tokenizer(models.BPE())
    if config.architecture == "qwen2":
        # transformers loads any qwen2 checkpoint's tokenizer as Qwen2Tokenizer, which rebuilds
        # Qwen's pipeline around tokenizer.json's vocab and merges: train with that same pipeline.
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)

    # Pad the BPE model's vocabulary to exactly vocab_size with entries no merge produces.
    state = json.loads(tok.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    next_id, index = len(vocab), 0
    if sorted(vocab.values()) != list(range(next_id)):
        raise RuntimeError("the trained BPE vocabulary is not contiguous")
    while next_id < config.vocab_size:
        filler = FILLER_FORMAT.format(index)
        index += 1
        if filler not in vocab:
            vocab[filler] = next_id
            next_id += 1
    tok = Tokenizer.from_str(json.dumps(state))
    ids = {token: tok.token_to_id(token) for token in specials}
    if [ids[token] for token in specials] != list(range(len(specials))):
        raise RuntimeError(f"unexpected special-token ids {ids}")

    bos = config.adds_bos
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS_TOKEN}:0 $A:0", pair=f"{BOS_TOKEN}:0 $A:0 {BOS_TOKEN}:1 $B:1",
            special_tokens=[(BOS_TOKEN, ids[BOS_TOKEN])],
        )
    else:
        tok.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])

    kwargs = {}
    if config.chat_template:
        kwargs["chat_template"] = CHATML_TEMPLATE_WITH_BOS if bos else CHATML_TEMPLATE
        kwargs["additional_special_tokens"] = [IM_START, IM_END]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=IM_END if config.chat_template else EOS_TOKEN,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        add_bos_token=bos,
        add_eos_token=False,
        model_max_length=config.max_positions,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )
    if len(tokenizer) != config.vocab_size:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, expected {config.vocab_size}")
    return tokenizer


# --------------------------------------------------------------------------- model

def hf_model_config(config: ZooModelConfig, *, bos_token_id: int = 1, eos_token_id: int | None = None,
                    pad_token_id: int = 3):
    """The ``transformers`` config of ``config`` (ids default to the zoo tokenizer's)."""
    import transformers

    config.validate()
    if eos_token_id is None:
        eos_token_id = config.special_tokens.index(IM_END if config.chat_template else EOS_TOKEN)
    ids = dict(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
               tie_word_embeddings=config.ties_embeddings)
    if config.architecture == "gpt2":
        return transformers.GPT2Config(
            vocab_size=config.vocab_size, n_positions=config.max_positions, n_embd=config.hidden_size,
            n_layer=config.num_layers, n_head=config.num_heads,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids,
        )
    common = dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
        intermediate_size=config.intermediate_size, max_position_embeddings=config.max_positions,
        head_dim=config.hidden_size // config.num_heads, attention_dropout=0.0, **ids,
    )
    if config.architecture == "llama":
        return transformers.LlamaConfig(**common)
    if config.architecture == "qwen2":
        return transformers.Qwen2Config(use_sliding_window=False, **common)
    return transformers.MistralConfig(sliding_window=None, **common)


def _model_class(architecture: str):
    import transformers

    return {
        "gpt2": transformers.GPT2LMHeadModel,
        "llama": transformers.LlamaForCausalLM,
        "qwen2": transformers.Qwen2ForCausalLM,
        "mistral": transformers.MistralForCausalLM,
    }[architecture]


def parameter_count(config: ZooModelConfig) -> int:
    """Number of distinct parameters of the model of ``config`` (counted on the meta device)."""
    import torch

    with torch.device("meta"):
        model = _model_class(config.architecture)(hf_model_config(config))
    return sum(p.numel() for p in model.parameters())


def build_zoo_model(directory: str | Path, config: ZooModelConfig = ZooModelConfig(), *,
                    corpus: Sequence[str] | None = None) -> Path:
    """Build the zoo model of ``config`` and save model + tokenizer under ``directory``.

    ``corpus`` (default :func:`default_corpus`) is what the tokenizer is trained on. An
    existing non-empty ``directory`` is replaced only if a previous zoo build made it (it holds
    ``fairpool-zoo.json``); anything else raises :class:`FileExistsError`. Returns the path.
    """
    import torch
    from transformers import GenerationConfig

    config.validate()
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not (directory / MANIFEST).is_file():
        raise FileExistsError(f"{directory} is not empty and was not built by the model zoo")
    tokenizer = build_zoo_tokenizer(config, corpus)
    model_config = hf_model_config(config, bos_token_id=tokenizer.bos_token_id,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = _model_class(config.architecture)(model_config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        manifest = {
            "config": asdict(config),
            "corpus": "default" if corpus is None else "custom",
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
            "special_token_ids": {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
                                  "pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


__all__ = [
    "ARCHITECTURES",
    "CHATML_TEMPLATE",
    "ZooModelConfig",
    "build_zoo_model",
    "build_zoo_tokenizer",
    "default_corpus",
    "hf_model_config",
    "llama_25m_shaped",
    "parameter_count",
    "smollm_135m_shaped",
]
