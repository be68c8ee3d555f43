"""The ``fairpool`` command line.

    fairpool base-model build [--force]
    fairpool market make --out DIR [--seed N]
    fairpool demo [--out DIR] [--objectives helpful,harmless] [--seed N] [...]
    fairpool value (--owner NAME=PATH | --adapter NAME=DIR) ... --eval PATH [--base-model DIR] --out DIR [...]
    fairpool generate --adapter NAME=DIR ... --coalition A,B --prompt TEXT [...]
    fairpool fidelity (--market | --owner NAME=PATH ... --eval PATH) --out DIR [--setting K=V ...]
    fairpool keys generate --out DIR [--name NAME] [--passphrase-env VAR] [--force]
    fairpool verify-report REPORT --coordinator-key PUB [--owner NAME --adapter DIR]
    fairpool whatif --report REPORT --coalition A,B [--game UTILITY]
    fairpool serve --ledger PATH --address HOST:PORT --tls-cert CERT --tls-key KEY --allowlist FILE
    fairpool fetch-report --server HOST:PORT --run ID --owner NAME --key KEY --coordinator-key PUB [...]

Every option is documented in docs/cli.md.

User mistakes end with ``error: <what, where>`` and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from common.config.games import ValuationSettings
from common.config.hardware import Hardware, check_device_exists
from common.config.job import (
    ValuationJob,
    check_min_owners,
    check_owner_name,
    check_owner_timeout,
)
from common.config.options import add_dataclass_options, build, chosen_options, field_default, parse_pairs
from common.config.spec import TrainingSpec, read_spec_file
from common.errors import ConfigError, FairPoolError
from common.trust.adapter_checks import AdapterLimits
from common.trust.passphrase import passphrase_from_env
from common.valuation.composition import COMPOSITION_RULES
from common.valuation.payout import PAYOUT_POLICIES
from server.cli.flags import as_cli
from server.federation.local_job import OUT_LOCK, check_data_needs, data_ref, make_value_job, prepare_job
from server.federation.process_owner import Interrupted, raise_on_termination
from server.report.schema import advice_sentences, audit_summary, owner_flags
from server.valuation.scorers import resolve_scorers

OFFLINE_ENVIRONMENT: dict[str, str] = {
    "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "TOKENIZERS_PARALLELISM": "false"}
"""Set (unless already set) by :func:`set_offline_environment` when a command starts, not on import."""

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1


def set_offline_environment() -> None:
    """Every command runs offline: no Hub downloads, no Flower update check or dependency install.

    Called first by :func:`main` (and ``deploy/make_job.py``), before any library that reads
    these variables is imported; importing this module changes nothing.
    """
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def seed_value(text: str) -> int:
    """An argparse type: a seed is a whole number in 0…2³²−1 (numpy and torch both take it)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in 0…4294967295, got {value}")
    return value


def add_training_options(p: argparse.ArgumentParser) -> None:
    """Every training setting, generated from :class:`~common.config.spec.TrainingSpec` (defaults and help live there)."""
    add_dataclass_options(p, TrainingSpec)
    p.add_argument("--spec", type=Path, default=None, metavar="FILE",
                   help="TOML or JSON file of training settings (keys as the options above, e.g. "
                        "max-length = 512); options given on the command line override it")
    p.add_argument("--chat-template", type=Path, default=None, metavar="FILE",
                   help="Jinja chat template for conversational data, when the base model's tokenizer has none")


def add_hardware_options(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype``, ``--gpus-per-owner``, generated from :class:`~common.config.hardware.Hardware`."""
    add_dataclass_options(p, Hardware)


def hardware_from_args(args: argparse.Namespace) -> Hardware:
    """The requested hardware, checked now: ``--device cuda`` on a machine without CUDA fails before any work."""
    hardware = build(Hardware, chosen_options(args, Hardware))
    check_device_exists(hardware.device)
    return hardware


def _job_default(name: str):
    """A :class:`ValuationJob` field's default: the options it owns show and use it."""
    return field_default(ValuationJob, name)


def _number(value: float) -> str:
    return f"{value:g}"


def add_valuation_options(p: argparse.ArgumentParser) -> None:
    """Options every valuation shares (``demo``, ``value`` and ``deploy/make_job.py``).

    The valuation settings are generated from :class:`~common.config.games.ValuationSettings`;
    the others' defaults come from the dataclasses that own them (:class:`ValuationJob`,
    :class:`AdapterLimits`, :class:`TrainingSpec`).
    """
    limits = AdapterLimits()
    p.add_argument("--composition", choices=COMPOSITION_RULES, default=_job_default("composition"),
                   help=f"how owner models combine into a coalition model (default: {_job_default('composition')}: "
                        "owners weighted by their examples, which tracks retraining on the pooled data best, "
                        "docs/fidelity.md; sum is the paper's rule)")
    p.add_argument("--payout-policy", choices=PAYOUT_POLICIES, default=_job_default("payout_policy"),
                   help="robust: like positive, but owners with near-identical held-out behaviour (copies, "
                        "near-copies, splits; see --replica-threshold) are paid as one source; "
                        "positive: shares ∝ positive Shapley values, negatives get 0 and are flagged; signed: φ/Σφ; "
                        "normalised: ∝ positive values of any kind (pays Banzhaf or leave-one-out values) "
                        f"(default: {_job_default('payout_policy')})")
    p.add_argument("--budget", type=float, default=_job_default("budget"),
                   help=f"amount to divide among owners (default {_number(_job_default('budget'))})")
    p.add_argument("--seed", type=seed_value, default=field_default(TrainingSpec, "seed"),
                   help="seed of training (and of the embedded market) "
                        f"(default {field_default(TrainingSpec, 'seed')})")
    add_training_options(p)
    add_hardware_options(p)
    p.add_argument("--min-owners", type=int, default=_job_default("min_owners"),
                   help=f"fewest accepted owners to value (default {_job_default('min_owners')})")
    p.add_argument("--coordinator-key", type=Path, default=None,
                   help="Ed25519 private key that signs the report (default: OUT/keys/coordinator.key, created)")
    p.add_argument("--storage-key", type=Path, default=None,
                   help="key file sealing adapters stored in the ledger (default: OUT/keys/storage.key, created)")
    p.add_argument("--max-adapter-norm", type=float, default=None,
                   help=f"reject adapters whose L2 norm exceeds this (default {_number(limits.max_norm)})")
    p.add_argument("--max-adapter-mb", type=float, default=None,
                   help=f"reject adapters larger than this (default {_number(limits.max_megabytes)})")
    p.add_argument("--duplicate-cosine", type=float, default=None,
                   help=f"flag owner pairs whose adapters have cosine similarity ≥ this "
                        f"(default {_number(limits.duplicate_cosine)})")
    add_dataclass_options(p, ValuationSettings)
    p.add_argument("--timeout", type=float, default=_job_default("owner_timeout_s"),
                   help=f"seconds to wait for owners (default {_number(_job_default('owner_timeout_s'))})")
    p.add_argument("--public-report", action="store_true",
                   help="write report.json/.md/.html and the charts world-readable (0644) instead of 0600")
    p.add_argument("--export-adapters", action="store_true",
                   help="also write each valued adapter, decrypted, under OUT/adapters/NAME (for fairpool generate); "
                        "the ledger always keeps them sealed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairpool", description=(
        "Federated Shapley data valuation for preference fine-tuning: owners train DPO LoRA "
        "adapters in a Flower federation; the coordinator values every coalition by "
        "language-model arithmetic and publishes payout shares."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    base = sub.add_parser("base-model", help="the embedded tiny base model")
    base_sub = base.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = base_sub.add_parser("build", help="build (or verify the cached) embedded base model")
    build.add_argument("--force", action="store_true", help="rebuild even if a valid cache exists")

    market = sub.add_parser("market", help="the embedded synthetic preference market")
    market_sub = market.add_subparsers(dest="action", required=True, metavar="ACTION")
    make = market_sub.add_parser("make", help="write the market as JSONL files")
    make.add_argument("--out", required=True, type=Path, help="directory to write into")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--scale", type=int, default=320, help="examples of each large owner (default 320)")
    make.add_argument("--eval-size", type=int, default=200, help="held-out pairs (default 200)")

    demo = sub.add_parser("demo", help="run the embedded default federation end to end")
    demo.add_argument("--out", type=Path, default=Path("fairpool-out/demo"), help="report directory")
    demo.add_argument("--objectives", default="", metavar="A,B",
                      help="value the two-objective market's owners by the reward of their coalitions' "
                           "generations on these built-in objectives (helpful, harmless)")
    add_valuation_options(demo)

    generate = sub.add_parser("generate", help="print what a coalition's composed model answers")
    generate.add_argument("--base-model", default=None, help="base model directory (default: the embedded one)")
    generate.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                          help="an owner's adapter directory (a run's adapters/NAME); repeat")
    generate.add_argument("--coalition", default="", help="comma-separated owner names; empty = the base model")
    generate.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for several")
    generate.add_argument("--composition", choices=COMPOSITION_RULES, default="sum")
    generate.add_argument("--size", action="append", default=[], metavar="NAME=N",
                          help="an owner's number of examples (needed by --composition size)")
    generate.add_argument("--max-new-tokens", type=int, default=32)
    generate.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--seed", type=seed_value, default=0)
    generate.add_argument("--chat", action="store_true",
                          help="send each --prompt as one user message through the chat template (chat models)")
    generate.add_argument("--max-prompt-length", type=int, default=0,
                          help="keep only the prompt's last N tokens, as the run's spec did (default: 0 = all)")
    generate.add_argument("--chat-template", type=Path, default=None, metavar="FILE",
                          help="Jinja chat template, when the base model's tokenizer has none (as given to the run)")
    add_hardware_options(generate)

    fidelity = sub.add_parser("fidelity", help="compare arithmetic coalitions with really retrained ones")
    fidelity.add_argument("--owner", action="append", default=[], metavar="NAME=PATH", help="an owner; repeat")
    fidelity.add_argument("--eval", default=None, help="held-out preference pairs (PATH or DIR:SPLIT)")
    fidelity.add_argument("--market", action="store_true",
                          help="use the embedded market's first four owners (clean, clean-small, noisy, flipped)")
    fidelity.add_argument("--base-model", default=None, help="base model directory (default: the embedded one)")
    fidelity.add_argument("--coalitions", default="all", help="'all' (n ≤ 6) or a number K of sampled coalitions")
    fidelity.add_argument("--orders", type=int, default=2, help="orders of sequential DPO per coalition")
    fidelity.add_argument("--seed", type=seed_value, default=0)
    fidelity.add_argument("--split", default=None, metavar="NAME",
                          help="split of every datasets directory given without PATH:SPLIT (default: train)")
    add_training_options(fidelity)
    add_hardware_options(fidelity)
    fidelity.add_argument("--setting", action="append", default=[], metavar="KEY=V[,KEY=V]",
                          help="run the study once per setting (keys: epochs, learning-rate) and write a "
                               "sweep summary; repeat for each setting")
    fidelity.add_argument("--out", type=Path, required=True)

    keys = sub.add_parser("keys", help="Ed25519 signing keys of a coordinator or an owner")
    keys_sub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    keygen = keys_sub.add_parser("generate", help="write a new key pair NAME.key (mode 600) and NAME.pub")
    keygen.add_argument("--out", required=True, type=Path, help="directory to write the key pair into")
    keygen.add_argument("--name", default="fairpool", help="file name stem (default: fairpool)")
    keygen.add_argument("--passphrase-env", default=None, metavar="VAR",
                        help="encrypt the private key with the passphrase in environment variable VAR")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing key pair")

    verify = sub.add_parser("verify-report", help="check a report's signature (and an owner's adapter digest)")
    verify.add_argument("report", type=Path, help="the report.json to check")
    verify.add_argument("--coordinator-key", required=True, metavar="PUB",
                        help="the coordinator's public key: a .pub file, or base64 of its 32 raw bytes")
    verify.add_argument("--owner", default=None, help="also check this owner's entry ...")
    verify.add_argument("--adapter", default=None, metavar="DIR",
                        help="... against the PEFT adapter directory the owner submitted")

    whatif = sub.add_parser("whatif", help="a coalition's utility and each owner's marginal contribution to it, "
                                           "from a report's stored utilities (no model work)")
    whatif.add_argument("--report", required=True, type=Path, help="the report.json of a run")
    whatif.add_argument("--coalition", required=True, metavar="A,B",
                        help="comma-separated owner names; an empty string is the base model alone")
    whatif.add_argument("--game", default=None, metavar="UTILITY",
                        help="which game (default: the one the payout is from)")

    serve = sub.add_parser("serve", help="publish the ledger's signed reports and progress to owners over gRPC")
    serve.add_argument("--ledger", required=True, type=Path, help="the coordinator's ledger.sqlite (in its --out)")
    serve.add_argument("--address", default="0.0.0.0:50061", help="HOST:PORT to listen on (default 0.0.0.0:50061)")
    serve.add_argument("--tls-cert", type=Path, default=None, help="server certificate chain (PEM)")
    serve.add_argument("--tls-key", type=Path, default=None, help="server private key (PEM)")
    serve.add_argument("--insecure", action="store_true", help="serve plaintext without TLS (local tests only)")
    serve.add_argument("--allowlist", type=Path, default=None,
                       help="JSON or TOML file mapping owner names to their public-key files")
    serve.add_argument("--coordinator-key", required=True, metavar="PUB",
                       help="the coordinator's public key: a stored report is used (to decide who may see a run) "
                            "only once its signature verifies")
    serve.add_argument("--allow", action="append", default=[], metavar="NAME=PUBKEY",
                       help="an owner allowed to connect and its public key (file or base64); repeat")

    fetch = sub.add_parser("fetch-report", help="fetch a run's report from `fairpool serve` and verify its signature")
    fetch.add_argument("--server", required=True, metavar="HOST:PORT", help="the publication server")
    fetch.add_argument("--run", required=True, help="run id")
    fetch.add_argument("--owner", required=True, help="your owner name (as on the server's allowlist)")
    fetch.add_argument("--key", required=True, type=Path, help="your owner private key (NAME.key)")
    fetch.add_argument("--passphrase-env", default=None, metavar="VAR",
                       help="the private key's passphrase is in environment variable VAR")
    fetch.add_argument("--coordinator-key", required=True, metavar="PUB",
                       help="the coordinator's public key: a .pub file, or base64 of its 32 raw bytes")
    fetch.add_argument("--ca-cert", type=Path, default=None,
                       help="CA certificate (PEM) that signed the server's certificate (default: system roots)")
    fetch.add_argument("--insecure", action="store_true", help="connect without TLS (only to `serve --insecure`)")
    fetch.add_argument("--watch", action="store_true", help="first stream the run's progress until it ends")
    fetch.add_argument("--timeout", type=float, default=10.0, help="seconds per call (default 10)")
    fetch.add_argument("--out", type=Path, default=None, help="write the verified report here (default: stdout)")

    flwr = sub.add_parser("flwr", help="Flower's `flwr` with this environment's executables on PATH "
                                       "(`fairpool flwr run . local --stream` works without activating the venv)")
    flwr.add_argument("flwr_args", nargs=argparse.REMAINDER, metavar="ARGS", help="passed to flwr as they are")
    value = sub.add_parser("value", help="value owners' preference datasets (or their existing adapters) "
                                         "in a simulated federation")
    value.add_argument("--owner", action="append", default=[], metavar="NAME=PATH",
                       help="an owner and its dataset (JSONL, JSONL.GZ, JSON, CSV, Parquet, or a datasets "
                            "directory, optionally DIR:SPLIT); repeat")
    value.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                       help="an owner valued by the LoRA adapter it already trained (a PEFT directory, "
                            "checked against the base model and the spec); repeat; mixes with --owner")
    value.add_argument("--adapter-examples", action="append", default=[], metavar="NAME=N",
                       help="preference pairs that trained --adapter NAME (the size composition rule and "
                            "the report use it; default: 0, not declared)")
    value.add_argument("--refuse-audit", action="append", default=[], metavar="NAME",
                       help="a simulated owner that does not consent to --audit (as a deployed owner without "
                            "allow-audit = true in its node config): coalitions with it are not retrained; repeat")
    value.add_argument("--eval", required=True, help="held-out preference pairs of the coordinator (PATH or DIR:SPLIT)")
    value.add_argument("--split", default=None, metavar="NAME",
                       help="split of every datasets directory given without PATH:SPLIT (default: train)")
    value.add_argument("--base-model", default=None,
                       help="local Hugging Face causal-LM directory (default: the embedded tiny model)")
    value.add_argument("--out", required=True, type=Path, help="report directory")
    add_valuation_options(value)
    return parser


def resolve_data_ref(option: str, text: str, default_split: str | None = None) -> str:
    """A data file, or ``DIR:SPLIT``, as an absolute reference, checked now (errors name ``option``)."""
    return data_ref(text, default_split, what=option)


def parse_owner_args(items: Sequence[str], default_split: str | None = None) -> list[tuple[str, str]]:
    """``--owner NAME=PATH`` (or ``NAME=DIR:SPLIT``) pairs, checked for form, uniqueness and existence."""
    pairs = parse_pairs(items, "--owner", paths=False)
    return [(check_owner_name(name, "--owner"), resolve_data_ref(f"--owner {name}=", ref, default_split))
            for name, ref in pairs.items()]


def checked_overrides(args: argparse.Namespace) -> dict:
    """:func:`spec_overrides`, validated against the spec's rules before any model is touched."""
    overrides = spec_overrides(args)
    TrainingSpec(base_model="-", **overrides)  # raises ConfigError naming the bad setting
    return overrides


def base_model_arg(args: argparse.Namespace) -> str:
    """``--base-model`` checked and resolved (a causal LM with a tokenizer), or the embedded model."""
    from common.embedded.base_model import build_base_model
    from common.model.base import check_model_dir

    return check_model_dir(args.base_model) if args.base_model else str(build_base_model(progress=_say))


def spec_overrides(args: argparse.Namespace) -> dict:
    """Training-spec fields the user chose: ``--spec FILE``, then explicit options (``seed`` always).

    A chat template file is read here, so its text (not its path) travels in the spec: every
    owner then renders conversations identically, and the spec digest covers the template.
    """
    chosen = read_spec_file(args.spec) if getattr(args, "spec", None) else {}
    chosen.update(chosen_options(args, TrainingSpec))
    template = getattr(args, "chat_template", None)
    if template is not None:
        try:
            chosen["chat_template"] = template.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--chat-template {template}: cannot read: {getattr(exc, 'strerror', None) or exc}") \
                from None
        if not chosen["chat_template"].strip():
            raise ConfigError(f"--chat-template {template}: the file is empty")
    return {**chosen, "seed": args.seed}


def job_options(args: argparse.Namespace, default_utilities: tuple[str, ...] = ("preference",)) -> dict:
    """:class:`~common.config.job.ValuationJob` keyword arguments from the valuation options, checked now."""
    check_owner_timeout(args.timeout)  # before any file is read; the roster's size is checked with the job
    check_min_owners(args.min_owners)
    valuation = build(ValuationSettings, {"utilities": default_utilities, **chosen_options(args, ValuationSettings)})
    if valuation.reward_scorers:  # a scorer that cannot load should fail now, not after training
        resolve_scorers(valuation.reward_scorers, valuation.reward_models, valuation.scorers)
    limits = {k: v for k, v in (("max_norm", args.max_adapter_norm), ("max_megabytes", args.max_adapter_mb),
                                 ("duplicate_cosine", args.duplicate_cosine)) if v is not None}
    try:
        adapter_limits = AdapterLimits(**limits)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for option, path in (("--coordinator-key", args.coordinator_key), ("--storage-key", args.storage_key)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{option} {path}: no such file")
    return {"composition": args.composition, "payout_policy": args.payout_policy, "budget": args.budget,
            "min_owners": args.min_owners, "owner_timeout_s": args.timeout, "valuation": valuation,
            "adapter_limits": adapter_limits, "hardware": hardware_from_args(args),
            "export_adapters": bool(getattr(args, "export_adapters", False)),
            "public_report": bool(getattr(args, "public_report", False))}


def _locked_run(job, args: argparse.Namespace) -> int:
    """Prepare and run ``job`` holding ``--out``'s lock: a second command on it gets exit 2 at once."""
    from common.storage.locks import exclusive_lock

    with exclusive_lock(Path(job.out_dir) / OUT_LOCK, f"--out {job.out_dir}"):
        return _run_and_print(prepare_job(job, coordinator_key=args.coordinator_key, storage_key=args.storage_key,
                                          say=_say))


def _record_interruption(job, how: str) -> None:
    """Say in the ledger that the run was interrupted (not some reason invented by dying processes)."""
    from common.status import RunStatus
    from server.federation.ledger import Ledger
    from server.federation.run import LEDGER_FILE

    path = Path(job.out_dir) / LEDGER_FILE
    if path.exists():
        with Ledger(path) as ledger:
            if ledger.run(job.run_id) is not None:
                ledger.finish_run(job.run_id, RunStatus.INTERRUPTED, failure=f"interrupted by {how}; re-run the command "
                                                                      "to resume")


def _run_and_print(job) -> int:
    from server.cli.progress_view import ProgressView
    from server.federation.simulation import run_local, runs_from_ledger

    instant = runs_from_ledger(job)  # run_local's choice, said before it starts
    _say(f"FairPool run {job.run_id}: {len(job.owners)} owners "
         + ("(every adapter is in the ledger: valued without starting Flower)" if instant
            else "in Flower's Simulation Engine"))
    with ProgressView(len(job.owners)) as view:
        try:
            report = run_local(job, on_event=view.show)
        except FairPoolError as exc:
            view.close()
            _say(f"error: {as_cli(exc)}")
            return EXIT_RUN_FAILED
        except (KeyboardInterrupt, Interrupted) as exc:  # every process of the run is stopped by now
            view.close()
            _record_interruption(job, "SIGINT" if isinstance(exc, KeyboardInterrupt) else str(exc))
            raise
    print(render_table(report))
    out = Path(job.out_dir)
    print(f"\nReport: {out / 'report.json'}\nPage: {out / 'report.html'}\nSummary: {out / 'report.md'}"
          f"\nChart: {out / 'values.png'}")
    if (out / "signature.png").exists():
        print(f"Data signature: {out / 'signature.png'}")
    if (out / "audit.png").exists():
        print(f"Audit chart: {out / 'audit.png'}")
    if "signature" in report:
        public = Path(job.coordinator_key).with_suffix(".pub")
        print(f"Signed by coordinator key {report['signature']['fingerprint']}: "
              f"fairpool verify-report {out / 'report.json'} --coordinator-key {public}")
    return 0


def render_table(report: dict) -> str:
    """The terminal table: owner, examples, status, value in each game, payout share."""
    games = report["games"]
    sourced = any(o.get("source") == "adapter" for o in report["owners"])
    rows = [("owner", "examples", *(("source",) if sourced else ()), "status", *(g["utility"] for g in games),
             "share")]
    for owner in report["owners"]:
        name = owner["name"]
        share = report["payout"]["shares"].get(name)
        cells = []
        for game in games:
            value = game["values"].get(name)
            cells.append("-" if not value else f"{value['value']:+.4f}"
                         + (f" ±{value['stderr']:.4f}" if value["stderr"] else ""))
        examples = str(owner["num_examples"]) if owner["num_examples"] else "-"
        rows.append((name, examples, *((owner.get("source", "trained"),) if sourced else ()), owner["status"],
                     *cells, f"{share:.1%}" if share is not None else "-"))
    text_columns = 4 if sourced else 3
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for game in games:
        lines.append(f"{game['utility']}: v(∅) = {game['empty']:.4f}, v(N) = {game['grand']:.4f} "
                     f"({game['metric']}, {game['composition']} composition, {game['estimator']}, {game['status']}, "
                     f"{game['evaluations']} coalitions)")
        lines += [f"  {sentence}" for sentence in advice_sentences(game)]
    lines.append(f"Payout from {report['payout']['game']}: {report['payout']['policy_description']}")
    for owner in report["owners"]:
        flags = owner_flags(report, owner["name"])
        if flags:
            lines.append(f"  ⚑ {owner['name']}: {'; '.join(flags)}")
    for refused in report.get("refused", []):
        lines.append(f"Refused a reply from {refused['owner']}: {refused['reason']}")
    if "audit" in report:
        lines.append(audit_summary(report["audit"]))
    return "\n".join(lines)


def cmd_base_model_build(args: argparse.Namespace) -> int:
    from common.embedded.base_model import MANIFEST, build_base_model

    path = build_base_model(force=args.force, progress=_say)
    manifest = json.loads((path / MANIFEST).read_text())
    print(f"{path}\nfingerprint {manifest['fingerprint']}")
    return 0


def cmd_market_make(args: argparse.Namespace) -> int:
    from common.embedded.market import default_profiles, make_market

    if args.scale < 4 or args.eval_size < 1:
        raise ConfigError("--scale must be at least 4 and --eval-size at least 1")
    market = make_market(args.out, seed=args.seed, profiles=default_profiles(args.scale), eval_size=args.eval_size)
    for name, path in market.owners.items():
        print(f"{name}\t{path}")
    print(f"eval\t{market.eval_path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import dataclasses

    from common.embedded.default_job import default_job

    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    options = job_options(args, tuple(f"reward:{o}" for o in objectives) or ("preference",))
    overrides = {k: v for k, v in checked_overrides(args).items() if k != "seed"}
    _say("preparing the embedded base model and synthetic market (cached after the first run)")
    job = default_job(out_dir=args.out.resolve(), seed=args.seed, progress=_say, objectives=bool(objectives),
                      **options)
    if overrides:
        job = dataclasses.replace(job, spec=dataclasses.replace(job.spec, **overrides))
    return _locked_run(job, args)


def adapter_examples_arg(items: Sequence[str], adapters: dict[str, str]) -> dict[str, int]:
    """``--adapter-examples NAME=N``: a positive whole number for an owner given by ``--adapter``."""
    counts = {}
    for name, text in parse_pairs(items, "--adapter-examples", paths=False, what="N").items():
        if name not in adapters:
            raise ConfigError(f"--adapter-examples {name}: no --adapter {name}=DIR")
        try:
            counts[name] = int(text)
        except ValueError:
            counts[name] = 0
        if counts[name] < 1:
            raise ConfigError(f"--adapter-examples {name}={text}: expected a whole number of preference pairs ≥ 1")
    return counts


def cmd_flwr(flwr_args: Sequence[str]) -> int:
    """Run Flower's ``flwr`` so that what it starts by name (``flower-superlink``, which starts
    ``flwr-serverapp`` and ``flwr-simulation``) is this interpreter's, venv active or not."""
    from server.federation.simulation import flwr_executable

    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    os.execve(flwr_executable(), [flwr_executable(), *flwr_args], env)


def cmd_value(args: argparse.Namespace) -> int:
    owners = parse_owner_args(args.owner, args.split)
    adapters = parse_pairs(args.adapter, "--adapter", what="DIR")
    for name in adapters:
        check_owner_name(name, "--adapter")
    if not owners and not adapters:
        raise ConfigError("give at least one --owner NAME=PATH or --adapter NAME=DIR")
    both = sorted(set(dict(owners)) & set(adapters))
    if both:
        raise ConfigError(f"{both[0]} is named by both --owner and --adapter: an owner brings data or an "
                          "adapter, not both")
    examples = adapter_examples_arg(args.adapter_examples, adapters)
    options = job_options(args)  # option errors first: before any file is read or model built
    overrides = checked_overrides(args)
    eval_ref = resolve_data_ref("--eval", args.eval, args.split)
    job = make_value_job(dict(owners), eval_ref, args.out, adapters=adapters, adapter_examples=examples,
                         base_model=base_model_arg(args), spec=overrides,
                         refuse_audit=[check_owner_name(name, "--refuse-audit") for name in args.refuse_audit],
                         **options)
    return _locked_run(job, args)


def cmd_generate(args: argparse.Namespace) -> int:
    from common.data import Message
    from common.model.tokenization import require_chat_template
    from server.valuation.decoding import CoalitionDecoder, DecodingConfig, load_adapter_dirs

    adapters = parse_pairs(args.adapter, "--adapter", what="DIR")
    if not adapters:
        raise ConfigError("give at least one --adapter NAME=DIR (an empty --coalition decodes the base model)")
    members = [m.strip() for m in args.coalition.split(",") if m.strip()]
    unknown = [m for m in members if m not in adapters]
    if unknown:
        raise ConfigError(f"--coalition names {unknown} without an --adapter NAME=DIR")
    sizes = parse_pairs(args.size, "--size", paths=False, what="N")
    try:
        size_list = [int(sizes[name]) for name in adapters] if args.composition == "size" else None
    except (KeyError, ValueError):
        raise ConfigError("--composition size needs --size NAME=N (a whole number) for every adapter") from None
    try:
        config = DecodingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_p=args.top_p, seed=args.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    hardware = hardware_from_args(args)
    template = spec_overrides(args).get("chat_template", "")
    base = base_model_arg(args)
    model, tokenizer = load_adapter_dirs(base, adapters, chat_template=template, hardware=hardware)
    decoder = CoalitionDecoder(model, tokenizer, list(adapters), args.composition, size_list,
                               max_prompt_length=args.max_prompt_length)
    names = list(adapters)
    prompts: list = [(Message("user", p),) for p in args.prompt] if args.chat else list(args.prompt)
    if args.chat:
        require_chat_template(tokenizer, base, [prompts[0]])
    responses = decoder.generate(prompts, [names.index(m) for m in members], config)
    for prompt, response in zip(args.prompt, responses):
        print(f"{prompt}{response}" if len(args.prompt) == 1 else f"[{prompt}]{response}")
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from common.data import load_preferences
    from common.embedded.default_job import default_market_dir, spec_for
    from common.embedded.market import make_market
    from server.studies.fidelity import run_fidelity, write_fidelity
    from server.studies.sweep import labels_unique, parse_setting, setting_label, summarise_sweep, write_sweep

    if args.market == bool(args.owner):
        raise ConfigError("give either --market or --owner NAME=PATH ... with --eval")
    if args.orders < 1:
        raise ConfigError("--orders must be at least 1")
    settings = [parse_setting(text) for text in args.setting]  # user mistakes before any work
    overrides = checked_overrides(args)
    hardware = hardware_from_args(args)
    if args.market:
        market = make_market(default_market_dir(args.seed), seed=args.seed)
        paths: dict[str, str | Path] = {name: market.owners[name] for name in ("clean", "clean-small", "noisy", "flipped")}
        eval_path: str | Path = market.eval_path
    else:
        if args.eval is None:
            raise ConfigError("--eval is required with --owner")
        paths = dict(parse_owner_args(args.owner, args.split))
        eval_path = resolve_data_ref("--eval", str(args.eval), args.split)
    if args.coalitions == "all" and len(paths) > 6:
        raise ConfigError("--coalitions all retrains 2^n - 1 coalitions: use it for n ≤ 6, or give a number K")
    base = base_model_arg(args)
    owners = {name: load_preferences(path)[0] for name, path in paths.items()}
    evaluation = load_preferences(eval_path)[0]
    coalitions = args.coalitions if args.coalitions == "all" else int(args.coalitions)
    if not args.setting:
        spec = spec_for(base, **overrides)
        check_data_needs(spec, list(owners.values()), evaluation, str(eval_path))
        report = run_fidelity(spec, owners, evaluation, coalitions=coalitions, orders=args.orders, seed=args.seed,
                              progress=_say, hardware=hardware)
        write_fidelity(report, args.out)
        print((args.out / "fidelity.md").read_text())
        return 0
    specs = [spec_for(base, **{**overrides, **setting}) for setting in settings]
    check_data_needs(specs[0], list(owners.values()), evaluation, str(eval_path))
    labels = [setting_label(s.to_record()) for s in specs]
    labels_unique(labels)
    reports = {}
    for label, spec in zip(labels, specs):
        _say(f"fidelity study under {label}")
        reports[label] = run_fidelity(spec, owners, evaluation, coalitions=coalitions, orders=args.orders,
                                      seed=args.seed, progress=_say, hardware=hardware)
        write_fidelity(reports[label], args.out / label)
    write_sweep(summarise_sweep(reports), args.out)
    print((args.out / "sweep.md").read_text())
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from common.trust.signing import fingerprint, generate_private_key, save_keypair

    # from the environment: argv is visible to every user in `ps`
    passphrase = passphrase_from_env(args.passphrase_env, what="--passphrase-env")
    key = generate_private_key()
    key_path, pub_path = save_keypair(key, args.out, args.name, passphrase=passphrase, force=args.force)
    print(f"private key: {key_path} (mode 600{', encrypted' if passphrase else ''}; keep it secret)")
    print(f"public key:  {pub_path}")
    print(f"fingerprint: {fingerprint(key.public_key())}")
    return 0


def cmd_verify_report(args: argparse.Namespace) -> int:
    from common.trust.signing import SignatureError, load_public_key
    from server.report.verify import VerificationError, verify_report_file

    if (args.owner is None) != (args.adapter is None):
        raise ConfigError("--owner and --adapter go together: give both or neither")
    pub = load_public_key(args.coordinator_key)
    try:
        lines = verify_report_file(args.report, pub, owner=args.owner, adapter_dir=args.adapter)
    except (SignatureError, VerificationError) as exc:  # a failed check, not a usage mistake
        _say(f"error: {args.report}: {as_cli(exc)}")
        return EXIT_RUN_FAILED
    print("\n".join(lines))
    print("OK")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from server.publication.service import TlsFiles, load_allowlist, parse_allow, serve

    if args.insecure and (args.tls_cert or args.tls_key):
        raise ConfigError("--insecure serves plaintext: drop --tls-cert/--tls-key, or drop --insecure")
    if not args.insecure and not (args.tls_cert and args.tls_key):
        raise ConfigError("give --tls-cert and --tls-key (or --insecure to serve plaintext, for local tests only)")
    allowlist = load_allowlist(args.allowlist) if args.allowlist else {}
    for name, key in parse_allow(args.allow).items():
        if name in allowlist:
            raise ConfigError(f"--allow {name}=...: owner {name!r} is already on the allowlist")
        allowlist[name] = key
    if args.insecure:
        _say("warning: serving WITHOUT TLS (--insecure): tokens and reports travel in the clear")
    from common.trust.signing import load_public_key

    running = serve(args.ledger, args.address, allowlist, coordinator_key=load_public_key(args.coordinator_key),
                    tls=None if args.insecure else TlsFiles(args.tls_cert, args.tls_key), insecure=args.insecure)
    host = args.address.rpartition(":")[0]
    print(f"serving {args.ledger} on {host}:{running.port} ({'plaintext' if args.insecure else 'TLS'}) "
          f"to {len(allowlist)} owner(s)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: running.server.stop(1.0))
    try:
        running.server.wait_for_termination()
    except KeyboardInterrupt:
        running.stop()
    return 0


def cmd_fetch_report(args: argparse.Namespace) -> int:
    from client.fetch import FetchError, PublicationClient, write_report
    from common.trust.signing import SignatureError, load_private_key, load_public_key

    passphrase = passphrase_from_env(args.passphrase_env, what="--passphrase-env")
    if args.insecure and args.ca_cert:
        raise ConfigError("--insecure connects without TLS: drop --ca-cert, or drop --insecure")
    key = load_private_key(args.key, passphrase)
    coordinator = load_public_key(args.coordinator_key)
    if args.insecure:
        _say("warning: connecting WITHOUT TLS (--insecure): your token and the report travel in the clear")
    with PublicationClient(args.server, args.owner, key, ca_cert=args.ca_cert, insecure=args.insecure,
                           timeout_s=args.timeout) as client:
        try:
            if args.watch:
                for event in client.watch(args.run):
                    _say(f"[{event['seq']}] {event['stage']}: {event['message']}")
            report = client.fetch_report(args.run, coordinator)
        except (FetchError, SignatureError) as exc:  # refused or unverifiable: nothing is written
            _say(f"error: run {args.run}: {as_cli(exc)}")
            return EXIT_RUN_FAILED
    if args.out is None:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _say(f"verified report of run {args.run} written to {write_report(report, args.out)}")
    return 0


def cmd_whatif(args: argparse.Namespace) -> int:
    from common.valuation.advice import marginals_at
    from server.report.model import read_report

    try:
        report = read_report(args.report)
        games = {g.utility: g for g in report.games}
        wanted = args.game or report.payout.game
    except OSError as exc:
        raise ConfigError(f"--report {args.report}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--report {args.report}: not a FairPool report.json ({exc!r})") from None
    if wanted not in games:
        raise ConfigError(f"--game: no game {wanted!r} in run {report.run_id}; games: {', '.join(games)}")
    game = games[wanted]
    names = [n.strip() for n in args.coalition.split(",") if n.strip()]
    unknown = [n for n in names if n not in game.players]
    if unknown:
        raise ConfigError(f"--coalition: {', '.join(unknown)} not among the owners of game {game.utility} "
                          f"({', '.join(game.players)})")
    coalition = frozenset(names)
    try:
        value, marginal = marginals_at(game.coalitions, game.players, coalition)
    except KeyError:
        raise ConfigError(f"--coalition {args.coalition}: its utility was not evaluated in run {report.run_id} "
                          f"({len(game.coalitions)} coalitions are stored; an exact valuation stores all)") from None
    label = " + ".join(sorted(coalition, key=game.players.index)) or "∅ (the base model)"
    print(f"{game.utility}: v({label}) = {value:.4f}   (v(∅) = {game.empty:.4f}, all owners {game.grand:.4f})")
    width = max(len(p) for p in game.players)
    print("marginal contribution: a member's v(S) − v(S ∖ i), an outsider's v(S ∪ i) − v(S)")
    for player in game.players:
        change = marginal[player]
        role = "adds" if player in coalition else "would add"
        print(f"  {player.ljust(width)}  {role:<9}  " + ("not evaluated" if change is None else f"{change:+.4f}"))
    return 0


COMMANDS = {
    ("whatif", None): cmd_whatif,
    ("keys", "generate"): cmd_keys_generate,
    ("verify-report", None): cmd_verify_report,
    ("serve", None): cmd_serve,
    ("fetch-report", None): cmd_fetch_report,
    ("fidelity", None): cmd_fidelity,
    ("generate", None): cmd_generate,
    ("base-model", "build"): cmd_base_model_build,
    ("market", "make"): cmd_market_make,
    ("demo", None): cmd_demo,
    ("value", None): cmd_value,
}


def main(argv: Sequence[str] | None = None) -> int:
    set_offline_environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["flwr"]:  # everything after it is flwr's own (argparse would read its options)
        return cmd_flwr(argv[1:])
    # transformers' deprecation notices about its own internals are not the user's to act on
    # (Flower's processes run with PYTHONWARNINGS=ignore; a run valued in this process too).
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\.|$)")
    args = build_parser().parse_args(argv)
    handler = COMMANDS[(args.command, getattr(args, "action", None))]
    if args.command in ("value", "demo"):
        raise_on_termination()  # SIGTERM/SIGHUP unwind like Ctrl-C, so the run's processes are stopped
    try:
        return handler(args)
    except FairPoolError as exc:
        _say(f"error: {as_cli(exc)}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        _say("interrupted: every process of the run was stopped; re-run the same command to resume")
        return 130
    except Interrupted as exc:
        _say(f"terminated by {exc}: every process of the run was stopped; re-run the same command to resume")
        return 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())
