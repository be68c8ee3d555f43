"""The coordinator's work after the owners reply, free of Flower so it can be tested alone.

Check every submission against the spec, score the held-out set n+1 times, compute every
coalition's utility by arithmetic, exact Shapley values, and the payout; return the report
as a plain dict (schema in docs/report.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.basemodel import load_base_model
from common.bits import members_of
from common.data import PreferenceExample, load_preferences
from common.digest import tensors_sha256
from common.errors import FairPoolError
from common.job import ValuationJob
from common.lora import expected_adapter_shapes
from common.estimators import estimate
from common.game import Game, UtilityStore
from common.games_config import PREFERENCE_UTILITIES, reward_scorer
from common.scorers import resolve_scorers
from common.payout import payout_shares
from common.preference_game import preference_game
from server.generation_game import CoalitionGenerations, reward_game, reward_game_key
from server.scoring import load_adapters, score_evaluation

ADAPTERS_DIR = "adapters"


def save_adapters(job: ValuationJob, peft_model, names: Sequence[str]) -> None:
    """Keep each valued adapter as a PEFT directory (``fairpool generate --adapter`` reads it).

    Written from the model that already holds every adapter: no base model is loaded again.
    """
    from server.decoding import export_adapter_dir

    for name in names:
        export_adapter_dir(peft_model, name, Path(job.out_dir) / ADAPTERS_DIR / name)


@dataclass
class Submission:
    """One owner's reply as the coordinator received it."""

    owner: str
    tensors: dict[str, np.ndarray] | None = None
    num_examples: int = 0
    claimed_sha256: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def rejection_reason(submission: Submission, expected: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why a submission cannot be valued, or ``None`` when it is sound."""
    if submission.error:
        return submission.error
    tensors = submission.tensors
    if not tensors:
        return "no adapter tensors received"
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        return f"adapter tensor names do not match the spec (missing {missing[:2]}, unexpected {extra[:2]})"
    for name, shape in expected.items():
        arr = tensors[name]
        if tuple(arr.shape) != shape:
            return f"tensor {name} has shape {tuple(arr.shape)}, expected {shape}"
        if arr.dtype != np.float32:
            return f"tensor {name} has dtype {arr.dtype}, expected float32"
        if not np.all(np.isfinite(arr)):
            return f"tensor {name} has non-finite values"
    if submission.claimed_sha256 and tensors_sha256(tensors) != submission.claimed_sha256:
        return "adapter digest does not match the tensors received"
    if submission.num_examples <= 0:
        return "owner reported no training examples"
    return None


COALITIONS_IN_REPORT = 4096
"""Above this many evaluated coalitions a game lists only the empty, singleton, leave-one-out
and grand coalitions (with ``coalitions_omitted``); 2²⁰ rows would swamp the report."""


def _coalition_rows(game: Game) -> tuple[list[dict], int]:
    masks, values = game.known()
    n = game.n
    omitted = 0
    if masks.size > COALITIONS_IN_REPORT:
        full = (1 << n) - 1
        keep = {0, full} | {1 << i for i in range(n)} | {full ^ (1 << i) for i in range(n)}
        chosen = np.isin(masks, np.array(sorted(keep), dtype=np.int64))
        omitted = int(masks.size - chosen.sum())
        masks, values = masks[chosen], values[chosen]
    rows = [{"members": [game.players[i] for i in members_of(int(m), n)], "value": float(v)}
            for m, v in zip(masks, values)]
    return rows, omitted


def _plain(value):
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


@dataclass
class Scored:
    """What every game of a run is built from: the valued owners and their scored evaluation."""

    names: list[str]
    sizes: list[int]
    digests: list[str]
    margins: np.ndarray
    peft_model: object
    tokenizer: object


def preference_game_for(job: ValuationJob, utility: str, scored: Scored) -> tuple[Game, dict]:
    """The arithmetic preference game (cheap: never persisted)."""
    game = preference_game(scored.names, scored.margins, PREFERENCE_UTILITIES[utility], job.composition,
                           scored.sizes, job.spec.beta, key=f"{job.run_id}/{utility}")
    return game, {"metric": PREFERENCE_UTILITIES[utility], "num_eval_pairs": int(scored.margins.shape[1])}


class RewardGames:
    """Builds the run's ``reward:NAME`` games; all share one decoder and one generation cache."""

    def __init__(self, job: ValuationJob, scored: Scored, progress: Callable[..., None],
                 store: UtilityStore | None) -> None:
        from common.data import load_prompts
        from server.decoding import CoalitionDecoder, DecodingConfig

        settings = job.valuation
        self.scorers = resolve_scorers(settings.reward_scorers, settings.reward_models, settings.scorers)
        prompts = load_prompts(settings.eval_prompts or job.eval_path)
        self.decoding = DecodingConfig(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                       top_p=settings.top_p, seed=job.spec.seed)
        decoder = CoalitionDecoder(scored.peft_model, scored.tokenizer, scored.names, job.composition, scored.sizes)
        self.generations = CoalitionGenerations(decoder, prompts, self.decoding, len(scored.names),
                                                progress=lambda m: progress("decode", m))
        self.job, self.scored, self.store = job, scored, store

    def game_for(self, utility: str) -> tuple[Game, dict]:
        name = reward_scorer(utility)
        settings = self.job.valuation
        identity = settings.scorers.get(name) or settings.reward_models.get(name) or f"builtin:{name}"
        key = reward_game_key(name, self.scored.digests, self.job.spec.base_fingerprint, self.job.composition,
                              self.scored.sizes, self.generations.prompts, asdict(self.decoding), identity)
        game = reward_game(self.scored.names, self.generations, name, self.scorers[name], key=key, store=self.store)
        return game, {"metric": f"mean {name} reward", "num_eval_prompts": len(self.generations.prompts),
                      "decoding": asdict(self.decoding)}


REWARD_EXACT_MAX_PLAYERS = 10
"""Under ``auto``, reward games are enumerated exactly up to this many owners only: each
coalition costs a decode of every evaluation prompt, so 2ⁿ soon stops being affordable."""


def play_game(job: ValuationJob, utility: str, game: Game, described: dict,
              progress: Callable[..., None]) -> dict:
    """Estimate one game's values and describe it for the report."""
    settings = job.valuation
    stop = None if settings.estimator in ("exact", "loo") else settings.stopping_rule(game.n)
    exact_bound = settings.exact_max_players
    if reward_scorer(utility):
        exact_bound = min(exact_bound, REWARD_EXACT_MAX_PLAYERS)
    progress("valuation", f"{utility}: estimating values ({settings.estimator})")
    result = estimate(game, settings.estimator, stop=stop, seed=job.spec.seed, exact_max_players=exact_bound)
    empty, grand = game.utilities(np.array([0, (1 << game.n) - 1]))
    rows, omitted = _coalition_rows(game)
    progress("coalitions", f"{utility}: {game.computed} coalition utilities computed",
             done=game.computed, total=game.computed)
    return {
        "utility": utility,
        **described,
        "composition": job.composition,
        "estimator": result.estimator,
        "status": result.status,
        "params": {k: _plain(v) for k, v in result.params.items()},
        "evaluations": int(game.computed),
        "empty": float(empty),
        "grand": float(grand),
        "values": result.as_dict(),
        "coalitions": rows,
        "coalitions_omitted": omitted,
    }


def value_submissions(
    job: ValuationJob,
    submissions: Sequence[Submission],
    progress: Callable[..., None] = lambda *_a, **_k: None,
    store: UtilityStore | None = None,
) -> dict:
    """Validate, score, value and pay: the full report for ``job``."""
    base_model, tokenizer = load_base_model(job.spec.base_model)
    expected = expected_adapter_shapes(job.spec, base_model)
    by_owner = {s.owner: s for s in submissions}
    owners_report, accepted = [], []
    for name in job.owner_names:
        sub = by_owner.get(name) or Submission(name, error="no reply from this owner")
        reason = rejection_reason(sub, expected)
        owners_report.append({
            "name": name,
            "num_examples": int(sub.num_examples),
            "adapter_sha256": tensors_sha256(sub.tensors) if sub.tensors else "",
            "status": "rejected" if reason else "valued",
            "reason": reason,
            "dropped": dict(sub.dropped),
            "metrics": {k: float(v) for k, v in sub.metrics.items()},
        })
        if reason is None:
            accepted.append(sub)
        progress("validate", f"{name}: {'rejected: ' + reason if reason else 'accepted'}", owner=name)
    if len(accepted) < max(1, job.min_owners):
        raise FairPoolError(
            f"only {len(accepted)} owner(s) accepted, fewer than the required {max(1, job.min_owners)}: "
            + "; ".join(f"{o['name']}: {o['reason']}" for o in owners_report if o["reason"])
        )
    names = [s.owner for s in accepted]
    sizes = [s.num_examples for s in accepted]
    eval_examples, _ = load_preferences(job.eval_path)
    peft_model = load_adapters(base_model, job.spec, {s.owner: s.tensors for s in accepted})
    evaluation = score_evaluation(peft_model, tokenizer, names, eval_examples, job.spec.max_length,
                                  progress=lambda m: progress("score", m))
    scored = Scored(names, sizes, [tensors_sha256(s.tensors) for s in accepted], evaluation.margins,
                    peft_model, tokenizer)
    save_adapters(job, peft_model, names)
    rewards = RewardGames(job, scored, progress, store) if job.valuation.reward_scorers else None
    games = []
    for utility in job.valuation.utilities:
        game, described = rewards.game_for(utility) if reward_scorer(utility) else \
            preference_game_for(job, utility, scored)
        games.append(play_game(job, utility, game, described, progress))
    paying = next(g for g in games if g["utility"] == job.valuation.payout_utility)
    payout = payout_shares({n: v["shapley"] for n, v in paying["values"].items()}, job.budget, job.payout_policy)
    progress("valuation", "values computed")
    return {
        "run_id": job.run_id,
        "owners": owners_report,
        "games": games,
        "payout": {
            "game": paying["utility"],
            "budget": payout.budget,
            "policy": payout.policy,
            "policy_description": payout.description,
            "shares": {k: float(v) for k, v in payout.shares.items()},
            "amounts": {k: float(v) for k, v in payout.amounts.items()},
            "flagged": list(payout.flagged),
        },
        "settings": {
            "base_model": job.spec.base_model,
            "base_fingerprint": job.spec.base_fingerprint,
            "spec": job.spec.to_record(),
            "spec_sha256": job.spec.digest(),
            "composition": job.composition,
            "eval_path": job.eval_path,
        },
    }


def check_efficiency(game: dict, tol: float = 1e-9) -> bool:
    """Σφ = v(N) − v(∅): a cheap integrity check reports and tests can share."""
    total = sum(v["shapley"] for v in game["values"].values())
    return math.isclose(total, game["grand"] - game["empty"], abs_tol=tol)


def submission_from_meta(owner: str, meta: Mapping[str, object], tensors, metrics) -> Submission:
    """Build a :class:`Submission` from a reply's decoded records (used by the ServerApp)."""
    if meta.get("error"):
        return Submission(owner, error=str(meta["error"]))
    return Submission(
        owner=owner,
        tensors=tensors,
        num_examples=int(meta.get("num_examples", 0)),
        claimed_sha256=str(meta.get("sha256", "")),
        dropped={k: int(v) for k, v in json.loads(str(meta.get("dropped", "{}"))).items()},
        metrics=dict(metrics or {}),
    )
