"""A valuation on this machine from files and existing adapters: what ``fairpool value`` and
``fairpool.value()`` share.

:func:`make_value_job` checks every input before anything is written (data files, the base
model, existing adapters, the evaluation set against ``max_length``) and describes the run;
:func:`run_value_job` holds the output folder's lock, gives a simulated job its keys, resumes
an earlier run of the same job, and runs it (:func:`~server.federation.simulation.run_local`:
from the ledger alone when it holds every adapter, else in Flower's Simulation Engine).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.config.job import OwnerEntry, ValuationJob, check_declared_sizes, check_owner_name
from common.config.spec import SETTABLE_KEYS, TrainingSpec, spec_settings
from common.errors import ConfigError

__all__ = ["OUT_LOCK", "check_data_needs", "data_ref", "make_value_job", "prepare_job", "run_value_job"]

OUT_LOCK = ".fairpool.lock"
"""Held in ``OUT`` for a whole run: a second command (or call) on the same folder fails at once."""


def data_ref(text: str | Path, default_split: str | None = None, *, what: str = "data") -> str:
    """A data file, or ``DIR:SPLIT``, as an absolute reference; checked to exist now.

    ``default_split`` applies to datasets directories named without a split. Absolute, because
    the reference travels to Flower processes with other working directories.
    """
    from common.data import parse_data_ref

    path, split = parse_data_ref(str(text))
    local = Path(path).expanduser()
    if not local.exists():
        raise ConfigError(f"{what} {text}: no such file or directory")
    split = split or (default_split if local.is_dir() else None)
    resolved = str(local.resolve())
    return f"{resolved}:{split}" if split else resolved


def check_data_needs(spec: TrainingSpec, datasets: Sequence[Sequence], evaluation: Sequence = (),
                     eval_ref: str = "") -> None:
    """What the data needs of the model, checked once before any Flower process starts:
    conversational data needs a chat template, and the evaluation set a pair that fits ``max_length``."""
    from common.model.base import load_tokenizer
    from common.model.tokenization import require_chat_template, usable_pairs

    firsts = [data[0] for data in (*datasets, evaluation) if data]
    tokenizer = load_tokenizer(spec.base_model, spec.chat_template)
    if any(getattr(e, "conversational", False) for e in firsts):
        require_chat_template(tokenizer, spec.base_model, firsts)
    if evaluation:
        usable_pairs(tokenizer, evaluation, spec.max_length, spec.max_prompt_length, where=f"`eval` {eval_ref}")


def make_value_job(
    owners: Mapping[str, str | Path],
    eval: str | Path,
    out: str | Path,
    *,
    adapters: Mapping[str, str | Path] | None = None,
    adapter_examples: Mapping[str, int] | None = None,
    base_model: str | Path | None = None,
    spec: Mapping[str, Any] | None = None,
    split: str | None = None,
    run_id: str | None = None,
    refuse_audit: Sequence[str] = (),
    say: Callable[[str], None] = lambda _m: None,
    **options: Any,
) -> ValuationJob:
    """Describe the valuation of ``owners`` (name → preference data: a file, or ``DIR:SPLIT``)
    and ``adapters`` (name → an existing PEFT adapter directory), checking every input first.

    ``spec`` sets training settings (:class:`~common.config.spec.TrainingSpec` fields); without
    ``base_model`` the embedded tiny model is built or reused. ``options`` are the other
    :class:`~common.config.job.ValuationJob` fields (``valuation``, ``composition``,
    ``payout_policy``, ``budget``, ``min_owners``, ``owner_timeout_s``, ``hardware``, ...).
    ``refuse_audit`` names simulated owners that do not consent to the audit (the others do).
    """
    from common.data import load_preferences
    from common.embedded.default_job import new_run_id, spec_for
    from common.model.adapter_files import check_adapter_dirs
    from common.model.base import check_model_dir

    adapter_dirs = {name: str(Path(path).expanduser().resolve()) for name, path in (adapters or {}).items()}
    examples = dict(adapter_examples or {})
    for name in (*owners, *adapter_dirs):
        check_owner_name(name)
    if not owners and not adapter_dirs:
        raise ConfigError("a valuation needs at least one owner: give `owners` (data) or `adapters`")
    unknown = sorted(set(refuse_audit) - set(owners) - set(adapter_dirs))
    if unknown:
        raise ConfigError(f"`refuse_audit` names {', '.join(unknown)}, not an owner of this valuation")
    precedence = getattr(options.get("valuation"), "precedence", ())
    if precedence:
        from common.valuation.asymmetric import parse_precedence

        try:
            parse_precedence(precedence, [*owners, *adapter_dirs])
        except ValueError as exc:
            raise ConfigError(str(exc).replace("precedence", "`precedence`", 1)) from None
    both = sorted(set(owners) & set(adapter_dirs))
    if both:
        raise ConfigError(f"{both[0]} is named both in `owners` and in `adapters`: an owner brings data or an "
                          "adapter, not both")
    check_declared_sizes(options.get("composition", "sum"), [n for n in adapter_dirs if n not in examples])
    overrides = spec_settings(spec or {}, where="`spec`", keys=SETTABLE_KEYS)
    TrainingSpec(base_model="-", **overrides)  # a bad setting is named before any model is touched
    refs = {name: data_ref(path, split, what=f"owner {name}:") for name, path in owners.items()}
    eval_ref = data_ref(eval, split, what="`eval`")
    if base_model is None:
        from common.embedded.base_model import build_base_model

        base = str(build_base_model(progress=say))
    else:
        base = check_model_dir(base_model)
    datasets = [load_preferences(ref)[0] for ref in refs.values()]  # fail fast, before any Flower process
    evaluation, _ = load_preferences(eval_ref)
    training = spec_for(base, **overrides)
    check_data_needs(training, datasets, evaluation, eval_ref)
    check_adapter_dirs(adapter_dirs, training.base_model, training)  # every adapter, before anything is written
    return ValuationJob(
        run_id=run_id or new_run_id(),
        owners=tuple(OwnerEntry(name, ref, allow_audit=name not in refuse_audit) for name, ref in refs.items())
        + tuple(OwnerEntry(name, adapter=path, adapter_examples=examples.get(name, 0),
                           allow_audit=name not in refuse_audit) for name, path in adapter_dirs.items()),
        eval_path=eval_ref,
        out_dir=str(Path(out).expanduser().resolve()),
        spec=training,
        **options,
    )


def prepare_job(job: ValuationJob, *, coordinator_key: str | Path | None = None,
                storage_key: str | Path | None = None, say: Callable[[str], None] = lambda _m: None) -> ValuationJob:
    """Keys for the job (created under ``OUT/keys`` unless given) and, for a re-run, its earlier run id."""
    from common.embedded.default_job import resume_or_start, with_trust_material

    job = with_trust_material(job, coordinator_key=coordinator_key and Path(coordinator_key).resolve(),
                              storage_key=storage_key and Path(storage_key).resolve())
    job, resumed = resume_or_start(job)
    if resumed:
        say(f"resuming run {job.run_id} in {job.out_dir} (same job): stored adapters and utilities are reused")
    return job


def run_value_job(job: ValuationJob, *, coordinator_key: str | Path | None = None,
                  storage_key: str | Path | None = None, say: Callable[[str], None] = lambda _m: None,
                  on_event: Callable[[dict], None] = lambda _e: None) -> dict:
    """Run ``job`` holding ``OUT``'s lock: prepared (keys, resume), then :func:`run_local`; the report."""
    from common.storage.locks import exclusive_lock
    from server.federation.simulation import run_local

    with exclusive_lock(Path(job.out_dir) / OUT_LOCK, f"`out_dir` {job.out_dir}"):
        prepared = prepare_job(job, coordinator_key=coordinator_key, storage_key=storage_key, say=say)
        return run_local(prepared, on_event)
