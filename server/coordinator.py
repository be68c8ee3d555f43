"""The coordinator's work after the owners reply, free of Flower so it can be tested alone.

Check every submission against the spec, score the held-out set n+1 times, compute every
coalition's utility by arithmetic, exact Shapley values, and the payout; return the report
as a plain dict (schema in docs/report.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

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
from common.games_config import PERSISTED_UTILITIES, PREFERENCE_UTILITIES
from common.payout import payout_shares
from common.preference_game import preference_game
from server.scoring import load_adapters, score_evaluation

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


def play_game(job: ValuationJob, utility: str, names: Sequence[str], margins: np.ndarray,
              sizes: Sequence[int], progress: Callable[..., None], store: UtilityStore | None = None) -> dict:
    """Build one game over the valued owners, estimate its values, describe it for the report.

    ``store`` (the run's ledger) memoises utilities across re-runs; it is only worth it for
    costly utilities, so the arithmetic preference games are given none (see
    :data:`common.games_config.PERSISTED_UTILITIES`).
    """
    settings = job.valuation
    game = preference_game(names, margins, PREFERENCE_UTILITIES[utility], job.composition, sizes,
                           job.spec.beta, key=f"{job.run_id}/{utility}",
                           store=store if utility in PERSISTED_UTILITIES else None)
    stop = None if settings.estimator in ("exact", "loo") else settings.stopping_rule(len(names))
    progress("valuation", f"{utility}: estimating values ({settings.estimator})")
    result = estimate(game, settings.estimator, stop=stop, seed=job.spec.seed,
                      exact_max_players=settings.exact_max_players)
    empty, grand = game.utilities(np.array([0, (1 << len(names)) - 1]))
    rows, omitted = _coalition_rows(game)
    progress("coalitions", f"{utility}: {game.computed} coalition utilities computed",
             done=game.computed, total=game.computed)
    return {
        "utility": utility,
        "metric": PREFERENCE_UTILITIES[utility],
        "composition": job.composition,
        "estimator": result.estimator,
        "status": result.status,
        "params": {k: _plain(v) for k, v in result.params.items()},
        "evaluations": int(game.computed),
        "num_eval_pairs": int(margins.shape[1]),
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
    scored = score_evaluation(peft_model, tokenizer, names, eval_examples, job.spec.max_length,
                              progress=lambda m: progress("score", m))
    games = [play_game(job, utility, names, scored.margins, sizes, progress, store)
             for utility in job.valuation.utilities]
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
