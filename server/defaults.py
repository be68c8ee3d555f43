"""The embedded default federation: built base model + synthetic market, as a job."""

from __future__ import annotations

import uuid
from pathlib import Path

from common.basemodel import build_base_model, load_base_model, model_fingerprint
from common.home import fairpool_home
from common.job import OwnerEntry, ValuationJob
from common.market import make_market, make_objectives_market
from common.spec import TrainingSpec


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def spec_for(base_model: str, **overrides) -> TrainingSpec:
    """A spec bound to the base model's fingerprint, so owners verify they train on π₀."""
    model, _ = load_base_model(base_model)
    return TrainingSpec(base_model=str(base_model), base_fingerprint=model_fingerprint(model), **overrides)


def default_market_dir(seed: int, kind: str = "default") -> Path:
    return fairpool_home() / "markets" / f"{kind}-seed{seed}"


def default_job(out_dir: str | Path | None = None, seed: int = 0, progress=lambda _m: None, *,
                objectives: bool = False, **job_options) -> ValuationJob:
    """Build (or reuse) the base model and an embedded market, and describe the run.

    ``objectives`` selects the two-objective (helpful/harmless) market instead of the default
    five-owner preference market.
    """
    base = build_base_model(progress=progress)
    if objectives:
        market = make_objectives_market(default_market_dir(seed, "objectives"), seed=seed)
    else:
        market = make_market(default_market_dir(seed), seed=seed)
    run_id = new_run_id()
    return ValuationJob(
        run_id=run_id,
        owners=tuple(OwnerEntry(name, str(path)) for name, path in market.owners.items()),
        eval_path=str(market.eval_path),
        out_dir=str(out_dir or fairpool_home() / "runs" / run_id),
        spec=spec_for(str(base), seed=seed),
        embedded_market=True,
        **job_options,
    )
