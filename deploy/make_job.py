"""The coordinator's job for a real deployment, and the Flower App that runs it.

    python deploy/make_job.py --owner acme=keys/acme.pub --owner globex=keys/globex.pub \
        --eval heldout.jsonl --coordinator-key coordinator.key --out /srv/fairpool/run1

writes ``run1/job.json`` (``simulated: false``: owners are SuperNodes that name themselves with
``--node-config owner-name=...``; the job lists names and signing public keys, never data
paths) and ``run1/app/`` (a minimal Flower App whose run config points at that job), then
prints the ``flwr run`` command. The ServerApp runs on the SuperLink's machine, so ``--out``,
``--eval`` and the key files must be paths there, and the report is written to ``--out`` there.

With ``--owner NAME=PUB`` (the owner's ``NAME.pub``) every owner's submission must be signed by
its key (its SuperNode's ``--node-config signing-key=...``), or it is refused; with bare names
submissions are accepted unsigned. The coordinator's key (``--coordinator-key``, else a new one
under ``OUT/keys``) signs the report.

Options are those of ``fairpool value`` (same parser), so a deployed valuation can ask for
everything a simulated one can.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.config.job import JOB_FILE, OwnerEntry, ValuationJob
from common.errors import ConfigError, FairPoolError

APP_DIR = "app"
EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    from server.cli.main import add_valuation_options

    p = argparse.ArgumentParser(prog="make_job.py", description=(
        "Write a deployed valuation job (owners are real SuperNodes) and the Flower App that runs it."))
    p.add_argument("--owner", action="append", required=True, metavar="NAME[=PUB]",
                   help="an owner, as its SuperNode names itself in --node-config owner-name=NAME, with its "
                        "signing public key (NAME.pub file or base64); repeat")
    p.add_argument("--eval", required=True, type=Path, help="held-out preference pairs (on the SuperLink's machine)")
    p.add_argument("--base-model", default=None,
                   help="base model directory; must exist at this same path on every owner's machine "
                        "(default: the embedded tiny model under FAIRPOOL_HOME)")
    p.add_argument("--out", required=True, type=Path, help="run directory: job.json, app/ and, later, the report")
    p.add_argument("--run-id", default=None, help="run id (default: random)")
    add_valuation_options(p)
    return p


def owner_entries(items: Sequence[str]) -> tuple[OwnerEntry, ...]:
    """``NAME`` or ``NAME=PUB`` (a public key file or base64 text), checked now rather than at run time."""
    from common.trust.signing import load_public_key, public_key_text

    entries = []
    for item in items:
        name, sep, key = item.partition("=")
        if not name.strip() or (sep and not key):
            raise ConfigError(f"--owner {item!r}: expected NAME or NAME=PUB")
        public = public_key_text(load_public_key(Path(key) if Path(key).is_file() else key)) if key else ""
        entries.append(OwnerEntry(name.strip(), public_key=public))
    return tuple(entries)


def job_from_args(args: argparse.Namespace) -> ValuationJob:
    """The deployed job: validated like ``fairpool value`` does, but without owners' data paths."""
    from common.data import load_preferences
    from common.embedded.default_job import new_run_id, spec_for, with_trust_material
    from server.cli.main import base_model_arg, check_data_needs, checked_overrides, job_options, resolve_data_ref

    owners = owner_entries(args.owner)
    options = job_options(args)
    overrides = checked_overrides(args)
    eval_ref = resolve_data_ref("--eval", str(args.eval))
    evaluation, _ = load_preferences(eval_ref)  # a bad evaluation file fails here, not after every owner trained
    spec = spec_for(base_model_arg(args), **overrides)
    check_data_needs(spec, [], evaluation, eval_ref)
    job = ValuationJob(
        run_id=args.run_id or new_run_id(),
        owners=owners,
        eval_path=eval_ref,
        out_dir=str(args.out.resolve()),
        spec=spec,
        simulated=False,
        **options,
    )
    return with_trust_material(job, coordinator_key=args.coordinator_key and args.coordinator_key.resolve(),
                               storage_key=args.storage_key and args.storage_key.resolve())


def write_run(job: ValuationJob) -> tuple[Path, Path]:
    """``job.json`` and ``app/`` in the job's output directory; returns both paths."""
    from server.federation.simulation import write_flower_app

    out = Path(job.out_dir)
    job_path = job.save(out / JOB_FILE)
    return job_path, write_flower_app(out / APP_DIR, job_path)


def main(argv: Sequence[str] | None = None) -> int:
    from server.cli.main import set_offline_environment

    set_offline_environment()  # as `fairpool` does: offline, no Flower update check
    args = build_parser().parse_args(argv)
    try:
        job = job_from_args(args)
        job_path, app_dir = write_run(job)
    except FairPoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"job: {job_path} (run {job.run_id}, owners {', '.join(job.owner_names)})")
    print(f"run it with:  flwr run {app_dir} <connection> --stream")
    print(f"report:       {Path(job.out_dir) / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
