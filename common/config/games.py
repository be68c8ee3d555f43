"""Which games a run plays, and how each is valued: the valuation half of a job.

A *utility name* selects a game over the same owners (method.md §3): ``preference`` is
held-out preference accuracy (ties ½, so v(∅) = 0.5), ``preference-logsigmoid`` the mean
``log σ(β·m_S)`` of the same pairs, and ``reward:NAME`` the mean score, by scorer NAME, of
what each coalition's composed model generates for the evaluation prompts. Each becomes its
own game in the report; the payout names the game it uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config.options import existing_path, name_value_pairs
from common.errors import ConfigError
from common.valuation.estimators import ESTIMATORS, EXACT_MAX_PLAYERS
from common.valuation.replicas import DEFAULT_REPLICA_THRESHOLD
from common.valuation.stopping import MaxEvaluations, MaxSeconds, RankStableFor, StderrBelow, StoppingRule, default_stop

PREFERENCE_UTILITIES: dict[str, str] = {"preference": "accuracy", "preference-logsigmoid": "logsigmoid"}
UTILITY_NAMES: tuple[str, ...] = tuple(PREFERENCE_UTILITIES)
REWARD_PREFIX = "reward:"


def reward_scorer(utility: str) -> str | None:
    """The scorer name of a ``reward:NAME`` utility, else None (a preference utility)."""
    return utility[len(REWARD_PREFIX):] if utility.startswith(REWARD_PREFIX) else None
ESTIMATOR_NAMES: tuple[str, ...] = ("auto", *ESTIMATORS)


@dataclass(frozen=True)
class ValuationSettings:
    """How to value: games, estimator, its budget, and the payout game.

    Each field carries its default and its help text: ``fairpool value``/``demo`` options
    (:func:`common.config.options.add_dataclass_options`) and docs/cli.md's table are made from them.
    """

    utilities: tuple[str, ...] = field(default=("preference",), metadata={
        "flag": "--utility", "metavar": "NAME", "action": "append",
        "help": "a game to value owners in, repeatable: preference (held-out preference accuracy), "
                "preference-logsigmoid (mean log σ(β·m) of the same pairs) or reward:SCORER (mean score, "
                "by SCORER, of each coalition's generations for the evaluation prompts); two or more "
                "games add signature.png"})
    estimator: str = field(default="auto", metadata={
        "metavar": "NAME", "choices": ESTIMATOR_NAMES,
        "help": "auto (exact when affordable: up to --exact-max-players owners without --max-evaluations/"
                "--max-seconds, or whenever --max-evaluations covers all 2ⁿ coalitions; else surrogate), "
                "exact, surrogate (stratified sampling with a cross-fitted tree or polynomial control "
                "variate), stratified (by coalition size, per-stratum stderr), leverage (Leverage SHAP "
                "regression), kernel (KernelSHAP), permutation (Monte Carlo), truncated (TMC), asymmetric "
                "(asymmetric Shapley values under --precedence), banzhaf (Banzhaf values, maximum sample "
                "reuse), beta (Beta Shapley values, Beta(--beta-alpha, --beta-beta)) or loo (leave-one-out)"})
    precedence: tuple[str, ...] = field(default=(), metadata={
        "flag": "--precedence", "metavar": "A<B,C", "action": "append",
        "help": "with --estimator asymmetric: the owners left of '<' come before those right of it (data "
                "that arrived first, or that the others' data derive from); repeatable, a partial order; "
                "none = every order (Shapley values)"})
    beta_alpha: float = field(default=16.0, metadata={
        "metavar": "A", "help": "with --estimator beta: α of Beta Shapley's weights; α > β favours small "
                                "coalitions (Kwon & Zou's Beta(16,1)); α = β = 1 is Shapley"})
    beta_beta: float = field(default=1.0, metadata={
        "metavar": "B", "help": "with --estimator beta: β of Beta Shapley's weights"})
    exact_max_players: int = field(default=EXACT_MAX_PLAYERS, metadata={
        "metavar": "K",
        "help": "largest number of owners valued exactly (all 2ⁿ coalitions) under auto; reward games, "
                "which decode every coalition, only up to min(K, 10)"})
    max_evaluations: int | None = field(default=None, metadata={
        "help": "coalition evaluations a sampling estimator may use; none = 10000·n"})
    tolerance: float | None = field(default=None, metadata={
        "metavar": "T", "help": "stop sampling once every owner's standard error is below T; none = 1e-3"})
    max_seconds: float | None = field(default=None, metadata={
        "metavar": "S", "help": "wall-clock budget of each sampling estimator run"})
    rank_stable_for: int | None = field(default=None, metadata={
        "metavar": "K", "help": "also stop sampling once the owners' ranking is unchanged for K consecutive checks"})
    payout_game: str = field(default="", metadata={
        "metavar": "NAME", "help": "the utility whose values set the payout; none = the first utility"})
    replica_threshold: float = field(default=DEFAULT_REPLICA_THRESHOLD, metadata={
        "metavar": "S",
        "help": "under the robust payout policy, owners whose held-out preference margins have similarity "
                "2⟨a,b⟩/(‖a‖²+‖b‖²) ≥ S are one source (a copy, near-copy or split) and are paid as one; "
                "1 = only exact behavioural copies"})
    reward_models: dict[str, str] = field(default_factory=dict, metadata={
        "flag": "--reward-model", "metavar": "NAME=DIR", "action": "append",
        "parse": name_value_pairs("DIR", paths=True),
        "help": "scorer NAME is a local sequence-classification model directory (one label: its logit; "
                "several: log-odds of the last label); repeatable"})
    scorers: dict[str, str] = field(default_factory=dict, metadata={
        "flag": "--scorer", "metavar": "NAME=MODULE:FUNCTION", "action": "append",
        "parse": name_value_pairs("MODULE:FUNCTION", paths=False),
        "help": "scorer NAME is your function (prompts, responses) -> list of floats (nan = prompt outside "
                "its domain); repeatable"})
    eval_prompts: str = field(default="", metadata={
        "metavar": "PATH", "parse": existing_path,
        "help": "prompts decoded by reward utilities (any supported data format; only prompt is read); "
                "none = the prompts of the evaluation set"})
    max_new_tokens: int = field(default=32, metadata={
        "help": "longest generated response of a reward utility, in tokens"})
    temperature: float = field(default=0.0, metadata={
        "metavar": "T", "help": "sampling temperature of reward utilities; 0 = greedy decoding"})
    top_p: float = field(default=1.0, metadata={
        "metavar": "P", "help": "nucleus sampling mass of reward utilities (with temperature > 0)"})
    audit: int = field(default=0, metadata={
        "metavar": "K",
        "help": "after valuation, the federation really retrains K coalitions of two or more owners (the "
                "grand coalition and K−1 drawn with --seed) by sequential DPO, each stage trained by its "
                "owner on its own data, and the report compares their held-out utilities with the "
                "arithmetic ones; owners must consent (node config allow-audit = true); 0 = no audit"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "precedence", tuple(self.precedence))  # a job file holds a JSON list
        if not self.utilities:
            raise ConfigError("at least one utility is needed")
        for name in self.utilities:
            if name not in PREFERENCE_UTILITIES and not reward_scorer(name):
                raise ConfigError(f"unknown utility {name!r}; choose from {', '.join(UTILITY_NAMES)} "
                                  f"or {REWARD_PREFIX}NAME")
        if self.max_new_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("decoding needs max_new_tokens ≥ 1, temperature ≥ 0 and 0 < top_p ≤ 1")
        if len(set(self.utilities)) != len(self.utilities):
            raise ConfigError(f"utility named twice: {list(self.utilities)}")
        if self.estimator not in ESTIMATOR_NAMES:
            raise ConfigError(f"unknown estimator {self.estimator!r}; choose from {', '.join(ESTIMATOR_NAMES)}")
        if self.precedence and self.estimator != "asymmetric":
            raise ConfigError("`precedence` needs the `estimator` asymmetric")
        if self.payout_game and self.payout_game not in self.utilities:
            raise ConfigError(f"`payout_game` {self.payout_game!r} is not one of the utilities {list(self.utilities)}")
        if self.max_evaluations is not None and self.max_evaluations < 1:
            raise ConfigError("`max_evaluations` must be at least 1")
        if self.tolerance is not None and not self.tolerance > 0:
            raise ConfigError("`tolerance` must be positive")
        if self.rank_stable_for is not None and self.rank_stable_for < 1:
            raise ConfigError("`rank_stable_for` must be at least 1")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError("`max_seconds` must be positive")
        if not (0 < self.beta_alpha < float("inf") and 0 < self.beta_beta < float("inf")):
            raise ConfigError(f"Beta Shapley needs `beta_alpha` > 0 and `beta_beta` > 0, got "
                              f"{self.beta_alpha!r}, {self.beta_beta!r}")
        if not 0 < self.replica_threshold <= 1:
            raise ConfigError(f"`replica_threshold` must be in (0, 1], got {self.replica_threshold!r}")
        if isinstance(self.audit, bool) or not isinstance(self.audit, int) or self.audit < 0:
            raise ConfigError(f"`audit` must be a whole number of coalitions ≥ 0, got {self.audit!r}")
        if not 1 <= self.exact_max_players <= 24:
            raise ConfigError("`exact_max_players` must be between 1 and 24")

    @property
    def sets_budget(self) -> bool:
        """Whether the user bounded the sampling effort (evaluations or seconds).

        Without a bound, ``auto`` enumerates up to ``exact_max_players`` owners as before;
        with one, it samples unless the bound buys all ``2ⁿ`` coalitions.
        """
        return self.max_evaluations is not None or self.max_seconds is not None

    @property
    def reward_scorers(self) -> tuple[str, ...]:
        """Scorer names of the run's reward utilities, in order."""
        return tuple(s for s in (reward_scorer(u) for u in self.utilities) if s)

    @property
    def payout_utility(self) -> str:
        return self.payout_game or self.utilities[0]

    def stopping_rule(self, n_players: int) -> StoppingRule:
        """The sampling budget: the user's parts where given, the defaults elsewhere."""
        if all(x is None for x in (self.max_evaluations, self.tolerance, self.max_seconds, self.rank_stable_for)):
            return default_stop(n_players)
        rule: StoppingRule = MaxEvaluations(self.max_evaluations or 10_000 * max(1, n_players))
        rule = rule | StderrBelow(self.tolerance if self.tolerance is not None else 1e-3)
        if self.max_seconds is not None:
            rule = rule | MaxSeconds(self.max_seconds)
        if self.rank_stable_for is not None:
            rule = rule | RankStableFor(self.rank_stable_for)
        return rule
