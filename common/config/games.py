"""Which games a run plays, and how each is valued: the valuation half of a job.

A *utility name* selects a game over the same owners (method.md §3): ``preference`` is
held-out preference accuracy (ties ½, so v(∅) = 0.5), ``preference-logsigmoid`` the mean
``log σ(β·m_S)`` of the same pairs, and ``reward:NAME`` the mean score, by scorer NAME, of
what each coalition's composed model generates for the evaluation prompts. Each becomes its
own game in the report; the payout names the game it uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import ConfigError
from common.valuation.estimators import ESTIMATORS
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
    """How to value: games, estimator, its budget, and the payout game."""

    utilities: tuple[str, ...] = ("preference",)
    """Utility names, one game each (see :data:`UTILITY_NAMES`)."""
    estimator: str = "auto"
    """``auto`` = ``exact`` when n ≤ ``exact_max_players``, else ``permutation``."""
    exact_max_players: int = 20
    """Largest number of owners valued by enumerating all 2ⁿ coalitions under ``auto``."""
    max_evaluations: int | None = None
    """Budget of coalition evaluations for sampling estimators (default 10 000·n)."""
    tolerance: float | None = None
    """Stop sampling once every owner's standard error is below this (default 1e-3)."""
    max_seconds: float | None = None
    """Wall-clock budget of one estimator run."""
    rank_stable_for: int | None = None
    """Also stop once the owners' ranking has not changed for this many checks."""
    payout_game: str = ""
    """Utility whose values set the payout; "" = the first utility."""
    reward_models: dict[str, str] = field(default_factory=dict)
    """Scorer name → local sequence-classification model directory (``--reward-model``)."""
    scorers: dict[str, str] = field(default_factory=dict)
    """Scorer name → ``module:function`` (``--scorer``)."""
    eval_prompts: str = ""
    """Prompts decoded by reward utilities; "" = the prompts of the evaluation set."""
    max_new_tokens: int = 32
    """Longest generated response of a reward utility, in tokens."""
    temperature: float = 0.0
    """Sampling temperature of reward utilities; 0 = greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass of reward utilities (with temperature > 0)."""

    def __post_init__(self) -> None:
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
        if self.payout_game and self.payout_game not in self.utilities:
            raise ConfigError(f"--payout-game {self.payout_game!r} is not one of the utilities {list(self.utilities)}")
        if self.max_evaluations is not None and self.max_evaluations < 1:
            raise ConfigError("max_evaluations must be at least 1")
        if self.tolerance is not None and not self.tolerance > 0:
            raise ConfigError("tolerance must be positive")
        if self.rank_stable_for is not None and self.rank_stable_for < 1:
            raise ConfigError("rank_stable_for must be at least 1")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError("max_seconds must be positive")
        if not 1 <= self.exact_max_players <= 24:
            raise ConfigError("exact_max_players must be between 1 and 24")

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
