"""The embedded default federation: built base model + synthetic market, as a job."""

from __future__ import annotations

import uuid
from pathlib import Path

from common.config.job import OwnerEntry, ValuationJob
from common.config.spec import TrainingSpec
from common.embedded.base_model import build_base_model
from common.embedded.market import make_market, make_objectives_market
from common.model.base import check_model_dir, weights_fingerprint
from common.storage.home import fairpool_home


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def spec_for(base_model: str, *, built_here: bool = False, **overrides) -> TrainingSpec:
    """A spec bound to the base model's weight files, so owners verify they train on π₀.

    The directory is checked (a causal LM with a tokenizer; ``built_here`` skips that for the
    embedded build, which its manifest already checked, and saves importing transformers) and
    resolved to an absolute path first: the spec travels to processes with other working
    directories.
    """
    path = str(Path(base_model).resolve()) if built_here else check_model_dir(base_model)
    return TrainingSpec(base_model=path, base_fingerprint=weights_fingerprint(path), **overrides)


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
        # The objectives market's size was measured under 3 epochs (common.embedded.market.OBJECTIVES_SCALE):
        # more over-optimises its generations.
        spec=spec_for(str(base), built_here=True, seed=seed, **({"epochs": 3.0} if objectives else {})),
        embedded_market=True,
        **job_options,
    )


KEYS_DIR = "keys"


def with_trust_material(job: ValuationJob, *, coordinator_key: str | Path | None = None,
                        storage_key: str | Path | None = None) -> ValuationJob:
    """A simulated job with keys: owners sign, the coordinator signs, stored adapters are sealed.

    Simulated owners' clients run on this machine, so their key pairs live under
    ``OUT/keys/owners/``; the coordinator key and the storage key default to ``OUT/keys/``.
    Existing key files are reused, so re-running the same command (to resume) keeps the same
    identities. Given paths are used as they are.
    """
    import dataclasses

    from common.trust.sealing import generate_storage_key
    from common.trust.signing import generate_private_key, load_private_key, public_key_text, save_keypair

    keys = Path(job.out_dir) / KEYS_DIR

    def keypair(directory: Path, name: str) -> Path:
        path = directory / f"{name}.key"
        if not path.exists():
            save_keypair(generate_private_key(), directory, name)
        return path

    owners = []
    for owner in job.owners:
        if owner.public_key or not job.simulated:
            owners.append(owner)
            continue
        key_path = keypair(keys / "owners", owner.name)
        public = public_key_text(load_private_key(key_path).public_key())
        owners.append(dataclasses.replace(owner, public_key=public, signing_key=str(key_path)))
    coordinator = Path(coordinator_key) if coordinator_key else keypair(keys, "coordinator")
    storage = Path(storage_key) if storage_key else keys / "storage.key"
    if not storage_key and not storage.exists():
        generate_storage_key(storage)
    return dataclasses.replace(job, owners=tuple(owners), coordinator_key=str(coordinator),
                               storage_key=str(storage))


def resume_or_start(job: ValuationJob) -> tuple[ValuationJob, bool]:
    """The job under its earlier run id when ``OUT`` holds the same job: re-running resumes.

    Re-running a command is how a crashed run resumes (a finished one is then replayed from
    the ledger). A *different* job may reuse ``OUT`` once the run there has finished; an
    unfinished different run is refused, so its resumable state is not mixed with this one.
    """
    import dataclasses
    import json

    from common.config.job import JOB_FILE
    from common.errors import ConfigError

    out = Path(job.out_dir)
    previous_path = out / JOB_FILE
    if not previous_path.exists():
        return job, False
    previous = ValuationJob.load(previous_path)
    if job.same_work_as(previous):
        return dataclasses.replace(job, run_id=previous.run_id), True
    try:
        report = json.loads((out / "report.json").read_text())
        finished = isinstance(report, dict) and report.get("run_id") == previous.run_id
    except (OSError, ValueError):
        finished = False
    if finished:
        return job, False
    raise ConfigError(f"{out} holds unfinished run {previous.run_id} of a different job; re-run that command "
                      "to resume it, or choose another `out_dir`")
