"""FairPool's Python API: value data owners, from a notebook or a program.

Value owners from their preference files and/or adapters they already have, through the same
pipeline as ``fairpool value`` (Flower's Simulation Engine, the ledger, signed reports)::

    import fairpool

    report = fairpool.value({"acme": "acme.jsonl", "globex": "globex.jsonl"}, eval="held_out.jsonl",
                            out="runs/q3", base_model="models/qwen2-0.5b")
    report.to_dataframe()            # one row per owner: values, stderr, shares
    report.verify("runs/q3/keys/coordinator.pub")

Or value any cooperative game with FairPool's estimators and stopping rules::

    game = fairpool.Game.from_function(["a", "b", "c"], lambda coalition: len(coalition) ** 1.5)
    result = fairpool.estimate(game, "stratified", stop=fairpool.MaxEvaluations(2_000), seed=0)
    fairpool.to_dataframe(result)

A report's own coalition utilities rebuild its game (``report.game()``), so another estimator,
``fairpool.mix_advice`` (which owners to pool) or ``fairpool.marginals_at`` (a what-if) needs
no model. The packages ``common``, ``client`` and ``server`` stay the
implementation; only the names below are the public API.
"""

from __future__ import annotations

from common.config.games import ValuationSettings
from common.config.hardware import Hardware
from common.config.spec import TrainingSpec
from common.errors import ConfigError, DataError, FairPoolError
from common.trust.signing import SignatureError
from common.valuation.advice import MixAdvice, marginals_at, mix_advice
from common.valuation.estimators import ESTIMATORS, estimate
from common.valuation.game import Game
from common.valuation.shapley import ValuationResult, ValueKind
from common.valuation.stopping import (
    AllOf,
    AnyOf,
    MaxEvaluations,
    MaxSamples,
    MaxSeconds,
    RankStableFor,
    StderrBelow,
    StoppingRule,
    ValuationStatus,
)
from fairpool.api import to_dataframe, value
from server.report.model import (
    AuditedCoalition,
    AuditResult,
    GameResult,
    OwnerResult,
    PayoutResult,
    PlayerValue,
    Report,
    read_report,
)
from server.report.verify import verify_report_file as verify_report

__all__ = [
    "ESTIMATORS",
    "AllOf",
    "AnyOf",
    "AuditResult",
    "AuditedCoalition",
    "ConfigError",
    "DataError",
    "FairPoolError",
    "Game",
    "GameResult",
    "Hardware",
    "MaxEvaluations",
    "MaxSamples",
    "MaxSeconds",
    "MixAdvice",
    "OwnerResult",
    "PayoutResult",
    "PlayerValue",
    "RankStableFor",
    "Report",
    "SignatureError",
    "StderrBelow",
    "StoppingRule",
    "TrainingSpec",
    "ValuationResult",
    "ValuationSettings",
    "ValuationStatus",
    "ValueKind",
    "estimate",
    "marginals_at",
    "mix_advice",
    "read_report",
    "to_dataframe",
    "value",
    "verify_report",
]
