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
from common.embedded.lexicon import (
    KIND_WORDS,
    PROMPT_TEMPLATES,
    RESPONSE_TEMPLATES,
    SUBJECTS,
    UNKIND_WORDS,
    render_response,
)

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
    profiles = profiles or default_profiles()
    _check_unique(profiles)
    data: dict[str, list[PreferenceExample]] = {}
    for profile in profiles:
        if profile.copy_of is None:
            data[profile.name] = owner_examples(profile, seed)
    for profile in profiles:
        if profile.copy_of is not None:
            if profile.copy_of not in data:
                raise ValueError(f"{profile.name} copies unknown owner {profile.copy_of}")
            data[profile.name] = list(data[profile.copy_of])
    return _write_market(Path(out), profiles, data, eval_examples(eval_size, seed), {
        "market_version": MARKET_VERSION,
        "seed": seed,
        "eval": {"path": "eval.jsonl", "size": eval_size},
        "ground_truth": "clean >= clean-small > noisy > 0 > flipped; duplicate == clean",
    })


def _check_unique(profiles: tuple[OwnerProfile, ...] | tuple[ObjectiveProfile, ...]) -> None:
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ValueError(f"owner names must be unique: {names}")


def _write_market(root: Path, profiles: tuple[OwnerProfile, ...] | tuple[ObjectiveProfile, ...],
                  data: dict[str, list[PreferenceExample]], evaluation: list[PreferenceExample],
                  manifest: dict, extra_evals: dict[str, list[PreferenceExample]] | None = None) -> Market:
    """The one market writer: every owner's JSONL file, ``eval.jsonl`` (and any extra evaluation
    files), and ``market.json`` = ``manifest`` plus each owner's profile and path."""
    (root / "owners").mkdir(parents=True, exist_ok=True)
    owners = {p.name: root / "owners" / f"{p.name}.jsonl" for p in profiles}
    for profile in profiles:
        save_preferences_jsonl(data[profile.name], owners[profile.name])
    eval_path = root / "eval.jsonl"
    save_preferences_jsonl(evaluation, eval_path)
    for name, examples in (extra_evals or {}).items():
        save_preferences_jsonl(examples, root / name)
    owner_rows = [{**asdict(p), "path": str(owners[p.name].relative_to(root))} for p in profiles]
    keys = list(manifest)
    at = keys.index("seed") + 1 if "seed" in keys else len(keys)  # the manifest's key order is kept
    manifest = {**{k: manifest[k] for k in keys[:at]}, "owners": owner_rows, **{k: manifest[k] for k in keys[at:]}}
    (root / "market.json").write_text(json.dumps(manifest, indent=2))
    return Market(root, owners, eval_path, profiles)


# ---------------------------------------------------------------------------------------------
# The two-objective market (helpfulness / harmlessness), mirroring the paper's experiment.
#
# Prompts are answerable questions or harmful requests (common.embedded.objectives). Owners differ in
# which kinds of prompt they hold and what they prefer on them; the coordinator values them
# on a ``helpful`` and a ``harmless`` utility separately. The last facts and harmful requests
# of common.embedded.objectives are reserved for the held-out evaluation set, whose prompts are also
# the prompts the generation (reward) utility decodes from.

OBJECTIVES_MARKET_VERSION = 1
OBJECTIVES_EXPECTED_SIGNS: dict[str, dict[str, str]] = {
    "helpful-only": {"helpful": "+"},
    "harmless-only": {"harmless": "+"},
    "complier": {"harmless": "-"},
}
"""Signs each owner's single-adapter effect (and value) must have on each utility."""

OBJECTIVES_SCALE = 48
"""Default triples per owner, in the middle of the range where the default training spec
(lr 5e-3, 3 epochs, batch 16) gives the expected effects on greedy generations (measured on the
embedded base model: 32-64 triples, seeds 0-5). Beyond ~64 triples that spec over-optimises:
the adapters' *generations* degenerate (the preference utility does not notice, the reward
utility does). See :func:`objectives_spec_overrides`."""


def objectives_spec_overrides(scale: int) -> dict[str, float]:
    """Training-spec overrides under which owners of ``scale`` triples keep generating well.

    Measured on the embedded base model (seeds 0-2): the default spec works up to 64 triples
    per owner (80 already fails for some seeds); above that a learning rate of 1e-3 does (the
    expected signs hold from 96 triples, the effects are strong from ~192 to 320).
    """
    return {} if scale <= 64 else {"learning_rate": 1e-3}


@dataclass(frozen=True)
class ObjectiveProfile(OwnerProfile):
    """An owner of the two-objective market.

    ``question_share`` of the owner's triples are on answerable questions, the rest on
    harmful requests. On questions the owner prefers ``question_chosen`` (``"answer"`` or
    ``"refusal"``) over the other; on harmful requests ``harmful_chosen`` (``"refusal"`` or
    ``"compliance"``) over the other. ``flip_rate`` then swaps an exact share of the labels.
    """

    question_share: float = 0.5
    question_chosen: str = "answer"
    harmful_chosen: str = "refusal"


def objective_profiles(scale: int = OBJECTIVES_SCALE) -> tuple[ObjectiveProfile, ...]:
    """The four owners of the two-objective market, each holding ``scale`` triples."""
    return (
        ObjectiveProfile("helpful-only", scale, 0.0, question_share=1.0,
                         description="answerable questions only: answer > refusal"),
        ObjectiveProfile("harmless-only", scale, 0.0, question_share=0.0,
                         description="harmful requests only: refusal > compliance"),
        ObjectiveProfile("complier", scale, 0.0, question_share=0.5, harmful_chosen="compliance",
                         description="helpful but complies: answer > refusal and compliance > refusal"),
        ObjectiveProfile("noisy", scale, 0.5, question_share=0.5,
                         description="both kinds, correct preferences with half the labels flipped"),
    )


def _question_pair(rng: random.Random, fact, template: str | None = None, prefer: str = "answer") -> PreferenceExample:
    from common.embedded import objectives as ob

    prompt = ob.question_prompt(fact, template or rng.choice(ob.QUESTION_TEMPLATES))
    answer = ob.answer_response(fact, rng.choice(ob.ANSWER_TEMPLATES))
    refusal = ob.refusal_response(rng.choice(ob.REFUSALS))
    return PreferenceExample(prompt, answer, refusal) if prefer == "answer" else PreferenceExample(prompt, refusal, answer)


def _request_pair(rng: random.Random, harm, template: str | None = None, prefer: str = "refusal") -> PreferenceExample:
    from common.embedded import objectives as ob

    prompt = ob.request_prompt(harm, template or rng.choice(ob.REQUEST_TEMPLATES))
    steps = tuple(rng.sample(ob.STEPS, 2))
    comply = ob.compliance_response(harm, rng.choice(ob.COMPLIANCE_TEMPLATES), steps)
    refusal = ob.refusal_response(rng.choice(ob.REFUSALS))
    return PreferenceExample(prompt, refusal, comply) if prefer == "refusal" else PreferenceExample(prompt, comply, refusal)


def _check_objective_profile(profile: ObjectiveProfile) -> None:
    if profile.question_chosen not in ("answer", "refusal"):
        raise ValueError(f"{profile.name}: question_chosen must be 'answer' or 'refusal'")
    if profile.harmful_chosen not in ("refusal", "compliance"):
        raise ValueError(f"{profile.name}: harmful_chosen must be 'refusal' or 'compliance'")
    if not 0.0 <= profile.question_share <= 1.0 or not 0.0 <= profile.flip_rate <= 1.0:
        raise ValueError(f"{profile.name}: question_share and flip_rate must be in [0, 1]")


def objective_owner_examples(profile: ObjectiveProfile, seed: int) -> list[PreferenceExample]:
    """Draw one owner's distinct triples on training prompts; exact question and flip counts."""
    from common.embedded import objectives as ob

    _check_objective_profile(profile)
    rng = random.Random(f"fairpool-objectives-{OBJECTIVES_MARKET_VERSION}-{seed}-{profile.name}")
    num_questions = round(profile.question_share * profile.size)
    kinds = [True] * num_questions + [False] * (profile.size - num_questions)
    rng.shuffle(kinds)
    examples: list[PreferenceExample] = []
    seen: set[PreferenceExample] = set()
    for is_question in kinds:
        for _attempt in range(1000):  # distinct triples, so loaders that drop duplicates keep all
            if is_question:
                example = _question_pair(rng, rng.choice(ob.train_facts()), prefer=profile.question_chosen)
            else:
                example = _request_pair(rng, rng.choice(ob.train_harms()), prefer=profile.harmful_chosen)
            if example not in seen:
                break
        seen.add(example)
        examples.append(example)
    flipped = set(rng.sample(range(profile.size), round(profile.flip_rate * profile.size)))
    return [_flip(e) if i in flipped else e for i, e in enumerate(examples)]


def objective_eval_examples(size: int, seed: int) -> list[PreferenceExample]:
    """Held-out, correctly labelled triples on reserved prompts: half questions, half requests.

    chosen = the right behaviour (answer a question, refuse a harmful request). Prompts are
    distinct as long as ``size`` allows (each kind has ``len(templates) × reserved`` prompts);
    questions and requests alternate.
    """
    from common.embedded import objectives as ob

    rng = random.Random(f"fairpool-objectives-{OBJECTIVES_MARKET_VERSION}-{seed}-eval")
    questions = [(f, t) for f in ob.eval_facts() for t in ob.QUESTION_TEMPLATES]
    requests = [(h, t) for h in ob.eval_harms() for t in ob.REQUEST_TEMPLATES]
    rng.shuffle(questions)
    rng.shuffle(requests)
    examples = []
    for i in range(size):
        if i % 2 == 0:
            fact, template = questions[(i // 2) % len(questions)]
            examples.append(_question_pair(rng, fact, template, prefer="answer"))
        else:
            harm, template = requests[(i // 2) % len(requests)]
            examples.append(_request_pair(rng, harm, template, prefer="refusal"))
    return examples


def make_objectives_market(
    out: str | Path,
    *,
    seed: int = 0,
    scale: int = OBJECTIVES_SCALE,
    eval_size: int = 60,
    profiles: tuple[ObjectiveProfile, ...] | None = None,
) -> Market:
    """Write the two-objective market under ``out``: owners' JSONL files, ``eval.jsonl``
    (both kinds), ``eval-helpful.jsonl`` / ``eval-harmless.jsonl`` (each kind alone) and a
    ``market.json`` manifest with the profiles and the expected signs of each owner's value.
    """
    from common.embedded import objectives as ob

    profiles = profiles or objective_profiles(scale)
    _check_unique(profiles)
    data = {profile.name: objective_owner_examples(profile, seed) for profile in profiles}
    evaluation = objective_eval_examples(eval_size, seed)
    split = {
        "helpful": [e for e in evaluation if ob.find_fact(e.prompt) is not None],
        "harmless": [e for e in evaluation if ob.find_harm(e.prompt) is not None],
    }
    owners = {p.name for p in profiles}
    manifest = {
        "market": "objectives",
        "market_version": OBJECTIVES_MARKET_VERSION,
        "seed": seed,
        "eval": {"path": "eval.jsonl", "size": eval_size,
                 "by_objective": {k: {"path": f"eval-{k}.jsonl", "size": len(v)} for k, v in split.items()}},
        "scorers": sorted(ob.BUILTIN_SCORERS),
        "recommended_spec_overrides": objectives_spec_overrides(max((p.size for p in profiles), default=0)),
        "expected_signs": {k: v for k, v in OBJECTIVES_EXPECTED_SIGNS.items() if k in owners},
        "ground_truth": "helpful-only > 0 on helpful; harmless-only > 0 on harmless; complier < 0 on harmless",
    }
    return _write_market(Path(out), tuple(profiles), data, evaluation, manifest,
                         {f"eval-{k}.jsonl": v for k, v in split.items()})
