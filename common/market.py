"""The synthetic preference market of the embedded default, with known ground truth.

Every owner's data is drawn from the same generator; what differs is how many triples they
hold and how often their labels are flipped (chosen and rejected swapped). A *correct* label
prefers the kind description of a subject over an unkind one. The held-out evaluation set
uses subjects no owner ever saw, so an adapter only helps there if it learned the preference,
not the examples. Ground truth: ``clean`` ≥ ``clean-small`` > ``noisy`` > 0 > ``flipped``,
and ``duplicate`` (an exact copy of ``clean``'s data) is worth what ``clean`` is worth.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from common.data import PreferenceExample, save_preferences_jsonl
from common.lexicon import KIND_WORDS, PROMPT_TEMPLATES, RESPONSE_TEMPLATES, SUBJECTS, UNKIND_WORDS, render_response

MARKET_VERSION = 1
EVAL_SUBJECTS = 8  # the last subjects of the lexicon are reserved for evaluation


@dataclass(frozen=True)
class OwnerProfile:
    """How one synthetic owner's data is made, and what its value should be."""

    name: str
    size: int
    flip_rate: float
    copy_of: str | None = None
    description: str = ""


def default_profiles(scale: int = 320) -> tuple[OwnerProfile, ...]:
    """The five owners of the default market; ``scale`` is the size of the large owners."""
    return (
        OwnerProfile("clean", scale, 0.0, description="large, correct preferences"),
        OwnerProfile("clean-small", max(1, scale // 4), 0.0, description="correct, a quarter of clean's size"),
        OwnerProfile("noisy", scale, 0.4, description="about 40% of labels flipped"),
        OwnerProfile("flipped", scale, 1.0, description="every label flipped"),
        OwnerProfile("duplicate", scale, 0.0, copy_of="clean", description="exact copy of clean's data"),
    )


def _pair(rng: random.Random, subject: str) -> PreferenceExample:
    """A minimal pair: same prompt, template and subject; kind words versus unkind words."""
    prompt = rng.choice(PROMPT_TEMPLATES).format(s=subject)
    template = rng.choice(RESPONSE_TEMPLATES)
    kind = tuple(rng.sample(KIND_WORDS, 3))
    unkind = tuple(rng.sample(UNKIND_WORDS, 3))
    return PreferenceExample(prompt, render_response(template, subject, kind), render_response(template, subject, unkind))


def _flip(example: PreferenceExample) -> PreferenceExample:
    return PreferenceExample(example.prompt, example.rejected, example.chosen)


def owner_examples(profile: OwnerProfile, seed: int) -> list[PreferenceExample]:
    """Draw one owner's triples; flips hit an exact ``round(flip_rate·size)`` examples."""
    rng = random.Random(f"fairpool-market-{MARKET_VERSION}-{seed}-{profile.name}")
    subjects = SUBJECTS[:-EVAL_SUBJECTS]
    examples = [_pair(rng, rng.choice(subjects)) for _ in range(profile.size)]
    flipped = set(rng.sample(range(profile.size), round(profile.flip_rate * profile.size)))
    return [_flip(e) if i in flipped else e for i, e in enumerate(examples)]


def eval_examples(size: int, seed: int) -> list[PreferenceExample]:
    """The coordinator's held-out pairs, all correctly labelled, on unseen subjects."""
    rng = random.Random(f"fairpool-market-{MARKET_VERSION}-{seed}-eval")
    return [_pair(rng, rng.choice(SUBJECTS[-EVAL_SUBJECTS:])) for _ in range(size)]


@dataclass(frozen=True)
class Market:
    """Paths of a written market: one file per owner plus the evaluation set."""

    root: Path
    owners: dict[str, Path]
    eval_path: Path
    profiles: tuple[OwnerProfile, ...]


def make_market(
    out: str | Path,
    *,
    seed: int = 0,
    profiles: tuple[OwnerProfile, ...] | None = None,
    eval_size: int = 200,
) -> Market:
    """Write the market as JSONL files under ``out`` and a ``market.json`` manifest."""
    root = Path(out)
    profiles = profiles or default_profiles()
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ValueError(f"owner names must be unique: {names}")
    data: dict[str, list[PreferenceExample]] = {}
    for profile in profiles:
        if profile.copy_of is None:
            data[profile.name] = owner_examples(profile, seed)
    for profile in profiles:
        if profile.copy_of is not None:
            if profile.copy_of not in data:
                raise ValueError(f"{profile.name} copies unknown owner {profile.copy_of}")
            data[profile.name] = list(data[profile.copy_of])
    (root / "owners").mkdir(parents=True, exist_ok=True)
    owners = {}
    for name, examples in data.items():
        owners[name] = root / "owners" / f"{name}.jsonl"
        save_preferences_jsonl(examples, owners[name])
    eval_path = root / "eval.jsonl"
    save_preferences_jsonl(eval_examples(eval_size, seed), eval_path)
    manifest = {
        "market_version": MARKET_VERSION,
        "seed": seed,
        "owners": [{**asdict(p), "path": str(owners[p.name].relative_to(root))} for p in profiles],
        "eval": {"path": "eval.jsonl", "size": eval_size},
        "ground_truth": "clean >= clean-small > noisy > 0 > flipped; duplicate == clean",
    }
    (root / "market.json").write_text(json.dumps(manifest, indent=2))
    return Market(root, {p.name: owners[p.name] for p in profiles}, eval_path, profiles)
