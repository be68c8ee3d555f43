"""The two functions of FairPool's Python API that are not re-exports: :func:`value` and
:func:`to_dataframe`. Both are thin: ``value`` runs the very functions ``fairpool value``
runs (:mod:`server.federation.local_job`), so a notebook and the CLI value the same way."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.config.games import ValuationSettings
from common.config.hardware import Hardware
from common.valuation.shapley import ValuationResult
from server.report.model import Report

if TYPE_CHECKING:
    import pandas as pd


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def value(
    owners: Mapping[str, str | Path] | None = None,
    *,
    eval: str | Path,
    out: str | Path,
    adapters: Mapping[str, str | Path] | None = None,
    adapter_examples: Mapping[str, int] | None = None,
    base_model: str | Path | None = None,
    spec: Mapping[str, Any] | None = None,
    settings: ValuationSettings | None = None,
    hardware: Hardware | None = None,
    composition: str = "size",
    payout_policy: str = "robust",
    budget: float = 1.0,
    min_owners: int = 1,
    owner_timeout_s: float = 900.0,
    split: str | None = None,
    coordinator_key: str | Path | None = None,
    storage_key: str | Path | None = None,
    export_adapters: bool = False,
    refuse_audit: Sequence[str] = (),
    progress: bool | Callable[[dict], None] = True,
) -> Report:
    """Value data owners, as ``fairpool value`` does; return the signed :class:`Report`.

    Args:
        owners: name → preference data (a JSONL/JSON/CSV/Parquet file in any TRL layout, or a
            ``datasets`` directory, ``DIR:SPLIT``); each owner trains a LoRA adapter with DPO.
        eval: the held-out preference pairs the preference utility scores.
        out: the run's folder (report, ledger, keys). Calling again with the same inputs and
            ``out`` resumes; when every adapter is already in the ledger, Flower is not started.
        adapters: name → an existing PEFT LoRA adapter directory (checked against the base and spec).
        adapter_examples: name → examples behind an existing adapter (for ``composition="size"``).
        base_model: a local Hugging Face causal-LM directory; default: the embedded tiny model.
        spec: training settings, :class:`~fairpool.TrainingSpec` field names (``{"epochs": 1}``).
        settings: which games and estimator (:class:`~fairpool.ValuationSettings`).
        hardware: device and dtype (:class:`~fairpool.Hardware`; default: a GPU where there is one).
        composition, payout_policy, budget, min_owners, owner_timeout_s, split, coordinator_key,
        storage_key, export_adapters: as the CLI options of the same names (docs/cli.md).
        refuse_audit: owners that do not consent to the audit (``settings.audit``: the
            federation retrains that many coalitions by sequential DPO to check the arithmetic).
        progress: True draws progress on stderr; False is silent; a callable receives each event.

    Raises:
        ConfigError, DataError: a bad input, before anything is written (the message names the
            file, line and setting).
        FairPoolError: the run failed (the reason is also in ``out/error.json``).
    """
    from server.federation.local_job import make_value_job, run_value_job

    say = _say if progress is True else (lambda _m: None)
    on_event = progress if callable(progress) else (_show if progress else (lambda _e: None))
    options: dict[str, Any] = {"composition": composition, "payout_policy": payout_policy, "budget": budget,
                               "min_owners": min_owners, "owner_timeout_s": owner_timeout_s,
                               "valuation": settings or ValuationSettings(), "hardware": hardware or Hardware(),
                               "export_adapters": export_adapters}
    job = make_value_job(dict(owners or {}), eval, out, adapters=adapters, adapter_examples=adapter_examples,
                         base_model=base_model, spec=spec, split=split, refuse_audit=tuple(refuse_audit), say=say,
                         **options)
    report = run_value_job(job, coordinator_key=coordinator_key, storage_key=storage_key, say=say, on_event=on_event)
    return Report(report, Path(job.out_dir) / "report.json")


def _show(event: dict) -> None:
    _say(f"[{event.get('t', 0):7.1f}s] {event.get('stage', '?'):>10}: {event.get('message', '')}")


def to_dataframe(result: ValuationResult | Report) -> "pd.DataFrame":
    """A pandas frame of a result: one row per player (value, stderr, count) or, for a report,
    per owner (:meth:`Report.to_dataframe`)."""
    if isinstance(result, Report):
        return result.to_dataframe()
    import pandas as pd

    return pd.DataFrame({"value": result.values, "stderr": result.stderr, "count": result.counts},
                        index=pd.Index(result.players, name="player"))
