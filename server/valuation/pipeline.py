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
from functools import cached_property
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from common.config.games import PREFERENCE_UTILITIES, reward_scorer
from common.config.job import OwnerEntry, ValuationJob
from common.config.spec import TrainingSpec
from common.data import PreferenceExample, load_preferences
from common.errors import FairPoolError
from common.model.base import load_spec_model
from common.model.lora import expected_adapter_shapes, load_adapters
from common.model.tokenization import usable_pairs
from common.status import OwnerStatus
from common.trust import faults
from common.trust.adapter_checks import AdapterLimits, adapter_problem, near_duplicates
from common.trust.canonical import json_sha256
from common.trust.digest import tensors_sha256
from common.trust.signing import REPORT_SCHEMA_VERSION
from common.valuation.advice import mix_advice
from common.valuation.asymmetric import parse_precedence, predecessors
from common.valuation.bits import members_of
from common.valuation.estimators import estimate
from common.valuation.game import Game, UtilityStore
from common.valuation.payout import payout_shares
from common.valuation.preference_game import preference_game
from common.valuation.replicas import margin_similarity, quotient_game, replica_groups, split_group_values
from common.valuation.shapley import ValuationResult
from common.wire.messages import ReplyMeta
from server.valuation.audit import Retrainer, audit_key, run_audit
from server.valuation.generation_game import CoalitionGenerations, reward_game, reward_game_key
from server.valuation.scorers import resolve_scorers
from server.valuation.scoring import score_evaluation

ADAPTERS_DIR = "adapters"


def save_adapters(job: ValuationJob, peft_model, names: Sequence[str]) -> None:
    """Keep each valued adapter as a PEFT directory (``fairpool generate --adapter`` reads it).

    Written from the model that already holds every adapter: no base model is loaded again.
    """
    from common.storage.private_files import make_private_dir
    from server.valuation.decoding import export_adapter_dir

    make_private_dir(Path(job.out_dir) / ADAPTERS_DIR)  # decrypted adapters: the coordinator's eyes only
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
    nonce: str = ""
    run_id: str = ""
    spec_sha256: str = ""
    signature: str = ""
    skipped: bool = False
    """The owner did not train because the coordinator already holds its adapter (a resumed run)."""
    source: str = "trained"
    """``"trained"`` (the owner trained it on its data for this run) or ``"adapter"`` (an existing one)."""

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the tensors received (``""`` without any), computed once per submission:
        admission, validation, the report and the game keys all need it."""
        return tensors_sha256(self.tensors) if self.tensors else ""


def examples_problem(submission: Submission, composition: str = "sum") -> str | None:
    """Why the submission's number of examples cannot be used, or None.

    A trained adapter must have trained on something. An existing adapter may come without a
    declared count (0), except under the ``size`` rule, which weighs owners by it.
    """
    if submission.source == "adapter":
        if submission.num_examples < 0 or (composition == "size" and submission.num_examples <= 0):
            return ("existing adapter without a declared number of examples (adapter-examples), "
                    "which the size composition rule needs")
        return None
    if submission.num_examples <= 0:
        return "owner reported no training examples"
    return None


def rejection_reason(submission: Submission, expected: Mapping[str, tuple[int, ...]], rank: int,
                     limits: AdapterLimits = AdapterLimits(), composition: str = "sum") -> str | None:
    """Why a submission's content cannot be valued, or ``None`` when it is sound: the one content check.

    :class:`server.federation.admission.Admission` calls it after the identity checks (allowlist,
    nonce, signature), and :func:`value_submissions` calls it again for direct callers, so the
    two can never disagree on what is valuable.
    """
    if submission.error:
        return submission.error
    problem = adapter_problem(submission.tensors, expected, rank, limits)
    if problem:
        return problem
    if submission.claimed_sha256 and submission.digest != submission.claimed_sha256:
        return "adapter digest does not match the tensors received"
    return examples_problem(submission, composition)


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
    evaluation: list[PreferenceExample] = field(default_factory=list)
    """The held-out pairs the margins are of (what an audit scores a retrained model on)."""


def preference_game_for(job: ValuationJob, utility: str, scored: Scored,
                        store: UtilityStore | None = None) -> tuple[Game, dict]:
    """The arithmetic preference game; its utilities are memoised in ``store`` (a resumed run reads them)."""
    key = "preference/" + json_sha256([job.run_id, utility, scored.names, scored.digests, job.composition,
                                       scored.sizes, job.spec.beta, job.eval_path])
    game = preference_game(scored.names, scored.margins, PREFERENCE_UTILITIES[utility], job.composition,
                           scored.sizes, job.spec.beta, key=key, store=store)
    return game, {"metric": PREFERENCE_UTILITIES[utility], "num_eval_pairs": int(scored.margins.shape[1])}


class RewardGames:
    """Builds the run's ``reward:NAME`` games; all share one decoder and one generation cache."""

    def __init__(self, job: ValuationJob, scored: Scored, progress: Callable[..., None],
                 store: UtilityStore | None) -> None:
        from common.data import load_prompts
        from server.valuation.decoding import CoalitionDecoder, DecodingConfig

        settings = job.valuation
        self.scorers = resolve_scorers(settings.reward_scorers, settings.reward_models, settings.scorers)
        prompts = load_prompts(settings.eval_prompts or job.eval_path)
        self.decoding = DecodingConfig(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                       top_p=settings.top_p, seed=job.spec.seed)
        decoder = CoalitionDecoder(scored.peft_model, scored.tokenizer, scored.names, job.composition, scored.sizes,
                                   max_prompt_length=job.spec.max_prompt_length)
        self.generations = CoalitionGenerations(decoder, prompts, self.decoding, len(scored.names),
                                                progress=lambda m: progress("decode", m))
        self.job, self.scored, self.store = job, scored, store

    def game_for(self, utility: str) -> tuple[Game, dict]:
        name = reward_scorer(utility)
        if name is None:
            raise ValueError(f"{utility!r} is not a reward utility")
        settings = self.job.valuation
        identity = settings.scorers.get(name) or settings.reward_models.get(name) or f"builtin:{name}"
        key = reward_game_key(name, self.scored.digests, self.job.spec.base_fingerprint, self.job.composition,
                              self.scored.sizes, self.generations.texts, asdict(self.decoding), identity)
        game = reward_game(self.scored.names, self.generations, name, self.scorers[name], key=key, store=self.store)
        return game, {"metric": f"mean {name} reward", "num_eval_prompts": len(self.generations.prompts),
                      "decoding": asdict(self.decoding)}


REWARD_EXACT_MAX_PLAYERS = 10
"""Under ``auto``, reward games are enumerated exactly up to this many owners only: each
coalition costs a decode of every evaluation prompt, so 2ⁿ soon stops being affordable."""


def estimate_values(job: ValuationJob, utility: str, game: Game,
                    precedence: Sequence[str] | Sequence[tuple[str, str]] | None = None) -> ValuationResult:
    """The job's estimator on ``game``: one rule for the valued games and the payout's quotient game."""
    settings = job.valuation
    exact_bound = settings.exact_max_players
    if reward_scorer(utility):
        exact_bound = min(exact_bound, REWARD_EXACT_MAX_PLAYERS)
    # Under auto with no budget given, enumerate up to exact_bound (the default rule's 10000·n
    # evaluations would otherwise read as a budget below 2ⁿ and make it sample).
    unbounded_auto = settings.estimator == "auto" and not settings.sets_budget and game.n <= exact_bound
    stop = None if settings.estimator in ("exact", "loo") or unbounded_auto else settings.stopping_rule(game.n)
    extra: dict[str, object] = {}
    if settings.estimator == "asymmetric":
        extra = {"precedence": settings.precedence if precedence is None else precedence}
    elif settings.estimator == "beta":
        extra = {"alpha": settings.beta_alpha, "beta": settings.beta_beta}
    return estimate(game, settings.estimator, stop=stop, seed=job.spec.seed, exact_max_players=exact_bound, **extra)


def play_game(job: ValuationJob, utility: str, game: Game, described: dict,
              progress: Callable[..., None], *, examples: Sequence[int]) -> dict:
    """Estimate one game's values, with its data-mix advice, and describe it for the report.

    ``examples`` are the owners' example counts in the game's player order (for the value per
    example).  The advice may evaluate more coalitions of a preference game (arithmetic, free);
    a reward game's advice uses only the coalitions its valuation decoded.
    """
    progress("valuation", f"{utility}: estimating values ({job.valuation.estimator})")
    result = estimate_values(job, utility, game)
    empty, grand = game.utilities(np.array([0, (1 << game.n) - 1]))
    rows, omitted = _coalition_rows(game)
    evaluated = int(game.known()[0].size)  # the same whether utilities were computed now or read back
    progress("coalitions", f"{utility}: {evaluated} coalition utilities ({game.computed} computed, "
             f"{evaluated - game.computed} read from the ledger)", done=evaluated, total=evaluated)
    return {
        "utility": utility,
        **described,
        "composition": job.composition,
        "estimator": result.estimator,
        "kind": str(result.kind),
        "status": result.status,
        "params": {k: _plain(v) for k, v in result.params.items()},
        "evaluations": evaluated,
        "empty": float(empty),
        "grand": float(grand),
        "values": result.as_dict(),
        "coalitions": rows,
        "coalitions_omitted": omitted,
        **({"trace": list(result.trace)} if result.trace else {}),
        "advice": mix_advice(game, {p: float(v) for p, v in zip(game.players, result.values)}, examples,
                             search=not reward_scorer(utility)).as_dict(),
    }


@runtime_checkable
class ResultStore(Protocol):
    """Where finished games are kept so a resumed run replays nothing (the ledger)."""

    def result(self, run_id: str, name: str) -> bytes | None: ...

    def save_result(self, run_id: str, name: str, value: bytes) -> None: ...


@dataclass(frozen=True)
class Admitted:
    """Stage 1 (admit): every owner's row for the report, the accepted submissions, and flags."""

    owners: list[dict]
    accepted: list[Submission]
    flags: list[dict]


def _tensors_of(accepted: Sequence[Submission]) -> dict[str, dict[str, np.ndarray]]:
    """The accepted adapters' tensors by owner (an accepted submission always has them)."""
    return {s.owner: s.tensors for s in accepted if s.tensors is not None}


def admit_submissions(owners: Sequence[OwnerEntry], submissions: Sequence[Submission],
                      expected: Mapping[str, tuple[int, ...]], *, rank: int, limits: AdapterLimits,
                      composition: str, min_owners: int, progress: Callable[..., None]) -> Admitted:
    """Which owners are players: each submission's content check, the quorum, near-duplicate flags."""
    by_owner = {s.owner: s for s in submissions}
    rows, accepted = [], []
    for entry in owners:
        name = entry.name
        sub = by_owner.get(name) or Submission(name, error="no reply from this owner")
        reason = rejection_reason(sub, expected, rank, limits, composition)
        rows.append({
            "name": name,
            "source": sub.source if sub.tensors is not None else entry.source,
            "num_examples": int(sub.num_examples),
            "adapter_sha256": sub.digest,
            "status": OwnerStatus.REJECTED if reason else OwnerStatus.VALUED,
            "reason": reason,
            "dropped": dict(sub.dropped),
            "metrics": {k: float(v) for k, v in sub.metrics.items()},
        })
        if reason is None:
            accepted.append(sub)
        progress("validate", f"{name}: {'rejected: ' + reason if reason else 'accepted'}", owner=name)
    if len(accepted) < max(1, min_owners):
        raise FairPoolError(
            f"only {len(accepted)} owner(s) accepted, fewer than the required {max(1, min_owners)}: "
            + "; ".join(f"{o['name']}: {o['reason']}" for o in rows if o["reason"])
        )
    flags = [{"kind": "near_duplicate", **pair,
              "note": "adapters nearly identical: possible copying or free-riding (not rejected)"}
             for pair in near_duplicates(_tensors_of(accepted), limits.duplicate_cosine)]
    for flag in flags:
        progress("validate", f"flagged: {flag['owners'][0]} and {flag['owners'][1]} have near-identical adapters "
                             f"(cosine {flag['cosine']:.4f})")
    return Admitted(rows, accepted, flags)


def score_accepted(accepted: Sequence[Submission], base_model, tokenizer, spec: TrainingSpec, eval_path: str,
                   progress: Callable[..., None]) -> tuple[Scored, int]:
    """Stage 2 (score): the n+1 scoring passes; returns the scored owners and the unusable pairs left out."""
    eval_examples, unusable = usable_pairs(tokenizer, load_preferences(eval_path)[0], spec.max_length,
                                           spec.max_prompt_length, where=f"evaluation set {eval_path}")
    if unusable:
        progress("score", f"{unusable} held-out pair(s) left out: the prompt alone fills max_length")
    names = [s.owner for s in accepted]
    peft_model = load_adapters(base_model, spec, _tensors_of(accepted))
    evaluation = score_evaluation(peft_model, tokenizer, names, eval_examples, spec.max_length,
                                  progress=lambda m: progress("score", m), max_prompt_length=spec.max_prompt_length)
    return Scored(names, [s.num_examples for s in accepted], [s.digest for s in accepted], evaluation.margins,
                  peft_model, tokenizer, list(eval_examples)), unusable


class GameSource:
    """Each utility's game, built once per run: the valuation plays it and the payout reads it again."""

    def __init__(self, job: ValuationJob, scored: Scored, store: UtilityStore | None,
                 progress: Callable[..., None]) -> None:
        self.job, self.scored, self.store, self.progress = job, scored, store, progress
        self._rewards: RewardGames | None = None
        self._games: dict[str, tuple[Game, dict]] = {}

    def game(self, utility: str) -> tuple[Game, dict]:
        if utility not in self._games:
            if reward_scorer(utility):
                if self._rewards is None:
                    self._rewards = RewardGames(self.job, self.scored, self.progress, self.store)
                self._games[utility] = self._rewards.game_for(utility)
            else:
                self._games[utility] = preference_game_for(self.job, utility, self.scored, self.store)
        return self._games[utility]


def play_games(job: ValuationJob, scored: Scored, store: UtilityStore | None,
               progress: Callable[..., None], source: GameSource | None = None) -> list[dict]:
    """Stages 3–4 (build games, estimate): one game per utility, each replayed from ``store`` when
    it already holds that game's result (a ledger does; a plain utility memo does not)."""
    source = source or GameSource(job, scored, store, progress)
    results = store if isinstance(store, ResultStore) else None
    games = []
    for utility in job.valuation.utilities:
        result_name = "game/" + json_sha256([utility, scored.names, scored.digests, asdict(job.valuation)])
        kept = results.result(job.run_id, result_name) if results is not None else None
        if kept is not None:
            progress("valuation", f"{utility}: values read from the ledger")
            games.append(json.loads(kept))
            continue
        game, described = source.game(utility)
        games.append(play_game(job, utility, game, described, progress, examples=scored.sizes))
        if results is not None:
            results.save_result(job.run_id, result_name, json.dumps(games[-1]).encode())
        faults.hit("after_game_stored")
    return games


def robust_values(job: ValuationJob, paying: dict, game_of: Callable[[], Game], margins: np.ndarray,
                  progress: Callable[..., None]) -> tuple[dict[str, float], list[dict]]:
    """The payout game's values made replication-robust (:mod:`common.valuation.replicas`), and
    the replica groups (two or more owners) for the report.

    Without two similar owners the values are the game's own and the game is not even built
    (``game_of`` is called only then: a resumed reward game would load its decoder). With a
    group, the quotient game (one player per group) is estimated with the job's estimator; its
    utilities are coalitions of the game, so those the valuation evaluated are not computed again.
    """
    names = list(paying["values"])  # the game's player order
    own = np.array([paying["values"][p]["value"] for p in names])
    similarity = margin_similarity(margins)
    threshold = job.valuation.replica_threshold
    if not np.triu(similarity >= threshold, k=1).any():
        return dict(zip(names, own.tolist())), []
    game = game_of()
    standalone = game.utilities(np.left_shift(1, np.arange(game.n, dtype=np.int64)))
    groups = replica_groups(similarity, threshold, standalone, strength=np.einsum("ij,ij->i", margins, margins))
    shared = [(k, g) for k, g in enumerate(groups) if len(g.members) > 1]
    for _, g in shared:
        progress("valuation", f"replicas: {', '.join(names[i] for i in g.members)} are one source "
                              f"(held-out margin similarity {g.similarity:.4f}); paid as {names[g.representative]}")
    quotient = quotient_game(game, groups)
    result = estimate_values(job, paying["utility"], quotient, precedence=_quotient_precedence(job, names, groups))
    values = split_group_values(groups, result.values, own)
    return dict(zip(names, values.tolist())), [
        {"owners": [names[i] for i in g.members], "representative": names[g.representative],
         "similarity": round(g.similarity, 6), "group_value": float(result.values[k]),
         "group_stderr": float(result.stderr[k])}
        for k, g in shared]


def _quotient_precedence(job: ValuationJob, names: Sequence[str], groups) -> list[tuple[str, str]] | None:
    """The job's precedence between groups, by representative (pairs inside one group drop out)."""
    if job.valuation.estimator != "asymmetric":
        return None
    group_of = {i: g.representative for g in groups for i in g.members}
    pairs = list(dict.fromkeys((group_of[a], group_of[b]) for a, b in parse_precedence(job.valuation.precedence, names)
                               if group_of[a] != group_of[b]))
    reps = [g.representative for g in groups]
    try:
        predecessors(len(reps), [(reps.index(a), reps.index(b)) for a, b in pairs])
    except ValueError:
        raise FairPoolError("the precedence puts owners that are one source on both sides of another owner ("
                            + "; ".join(" and ".join(names[i] for i in g.members) for g in groups if len(g.members) > 1)
                            + "), so their group has no place in the order; run again (nothing retrains) with "
                            "`payout_policy` positive, or a precedence that keeps them together") from None
    return [(names[a], names[b]) for a, b in pairs]


def pay(games: Sequence[dict], payout_utility: str, budget: float, policy: str, *,
        robust: Callable[[dict], tuple[dict[str, float], list[dict]]] | None = None,
        threshold: float | None = None) -> dict:
    """Stage 5 (pay): the payout block, from the payout game's values of the kind it states.

    Under the ``robust`` policy ``robust(paying_game)`` returns the replication-robust values and
    the replica groups; without it (a caller with no games to re-read) no owner is grouped.
    """
    paying = next(g for g in games if g["utility"] == payout_utility)
    values = {n: v["value"] for n, v in paying["values"].items()}
    replicas: list[dict] = []
    if policy == "robust" and robust is not None:
        values, replicas = robust(paying)
    payout = payout_shares(values, budget, policy, paying["kind"], replicas=[r["owners"] for r in replicas],
                           threshold=threshold if policy == "robust" else None)
    block = {
        "game": paying["utility"],
        "budget": payout.budget,
        "policy": payout.policy,
        "kind": str(payout.kind),
        "policy_description": payout.description,
        "shares": {k: float(v) for k, v in payout.shares.items()},
        "amounts": {k: float(v) for k, v in payout.amounts.items()},
        "flagged": list(payout.flagged),
    }
    if policy == "robust":
        block["replica_threshold"] = threshold
        block["replicas"] = replicas
        block["paid_values"] = {k: float(v) for k, v in values.items()}
    return block


def value_submissions(
    job: ValuationJob,
    submissions: Sequence[Submission],
    progress: Callable[..., None] = lambda *_a, **_k: None,
    store: UtilityStore | None = None,
    *,
    base=None,
    expected: Mapping[str, tuple[int, ...]] | None = None,
    refused: Sequence[Mapping[str, object]] = (),
    retrainer: Retrainer | None = None,
) -> dict:
    """The valuation pipeline, admit → score → build games → estimate → pay → report; returns the
    report (the ``report.json`` contract, docs/report.md).

    Each stage takes only what it needs and returns what the next reads. ``store`` memoises
    coalition utilities; when it also keeps results (:class:`ResultStore`, the ledger), each
    finished game is stored too, so a resumed run re-plays nothing. ``base`` is an already
    loaded ``(model, tokenizer)`` and ``expected`` the adapter shapes of its spec (both are
    computed here when not given); ``refused`` lists replies refused before valuation that
    named no owner of the job (or were replays), for the ``refused`` section of the report.
    ``retrainer`` trains the stages of ``audit`` (the federation's owners): without one, a job
    that asks for an audit is refused before any work.
    """
    if job.valuation.audit and retrainer is None:
        raise FairPoolError(f"`audit` {job.valuation.audit} needs a federation to retrain coalitions: run the job "
                            "through Flower (fairpool value starts one)")
    base_model, tokenizer = base or load_spec_model(job.spec, job.hardware)
    expected = expected or expected_adapter_shapes(job.spec, base_model)
    admitted = admit_submissions(job.owners, submissions, expected, rank=job.spec.lora_r, limits=job.adapter_limits,
                                 composition=job.composition, min_owners=job.min_owners, progress=progress)
    scored, unusable = score_accepted(admitted.accepted, base_model, tokenizer, job.spec, job.eval_path, progress)
    if job.export_adapters:
        save_adapters(job, scored.peft_model, scored.names)
    source = GameSource(job, scored, store, progress)
    games = play_games(job, scored, store, progress, source)

    def robust(paying: dict) -> tuple[dict[str, float], list[dict]]:
        return robust_values(job, paying, lambda: source.game(paying["utility"])[0], scored.margins, progress)

    payout = pay(games, job.valuation.payout_utility, job.budget, job.payout_policy, robust=robust,
                 threshold=job.valuation.replica_threshold)
    progress("valuation", "values computed")
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "run_id": job.run_id,
        "owners": admitted.owners,
        "games": games,
        "payout": payout,
        "flags": admitted.flags,
        "settings": {
            "base_model": job.spec.base_model,
            "base_fingerprint": job.spec.base_fingerprint,
            "spec": job.spec.to_record(),
            "spec_sha256": job.spec.digest(),
            "composition": job.composition,
            "eval_path": job.eval_path,
            "signatures_required": job.requires_signatures,
            "adapter_limits": asdict(job.adapter_limits),
            "eval_pairs_unusable": unusable,
        },
    }
    if refused:
        report["refused"] = [dict(r) for r in refused]
    if job.valuation.audit and retrainer is not None:
        report["audit"] = audit_stage(job, scored, _tensors_of(admitted.accepted), retrainer, store, progress)
    return report


def audit_stage(job: ValuationJob, scored: Scored, adapters: Mapping[str, Mapping[str, np.ndarray]],
                retrainer: Retrainer, store: UtilityStore | None, progress: Callable[..., None]) -> dict:
    """Stage 7 (audit, when asked): the report's ``audit`` block, read from ``store`` when a
    resumed run already holds it (retraining is the costliest thing a run does). An audit that
    fails says why in its ``note``; the valuation it checks stands."""
    results = store if isinstance(store, ResultStore) else None
    name = audit_key(job, scored.names, scored.digests)
    kept = results.result(job.run_id, name) if results is not None else None
    if kept is not None:
        progress("audit", "audit read from the ledger")
        return json.loads(kept)
    try:
        block = run_audit(job, scored.names, scored.sizes, scored.margins, adapters, scored.evaluation, retrainer,
                          progress)
    except Exception as exc:  # the audit checks the valuation; its failure must not lose the valuation
        reason = str(exc) if isinstance(exc, FairPoolError) else f"{type(exc).__name__}: {exc}"
        progress("audit", f"the audit failed: {reason}")
        return {"requested": job.valuation.audit, "coalitions": [], "skipped": [], "declined": {},
                "fine_tunings": 0, "note": f"the audit failed: {reason}"}
    if results is not None:
        results.save_result(job.run_id, name, json.dumps(block).encode())
    return block


def check_efficiency(game: dict, tol: float = 1e-9) -> bool:
    """Σφ = v(N) − v(∅): a cheap integrity check reports and tests can share (Shapley games only)."""
    total = sum(v["value"] for v in game["values"].values())
    return math.isclose(total, game["grand"] - game["empty"], abs_tol=tol)


def submission_from_meta(meta: ReplyMeta, tensors, metrics) -> Submission:
    """Build a :class:`Submission` from a reply's decoded records (:mod:`common.wire.messages`)."""
    if meta.error:
        return Submission(meta.owner, error=meta.error)
    if meta.skipped:
        return Submission(meta.owner, skipped=True)
    return Submission(owner=meta.owner, tensors=tensors, num_examples=meta.num_examples,
                      claimed_sha256=meta.sha256, dropped=dict(meta.dropped), metrics=dict(metrics or {}),
                      nonce=meta.nonce, run_id=meta.run_id, spec_sha256=meta.spec_sha256,
                      signature=meta.signature, source=meta.source)
