"""A real Deployment Engine federation on one machine: TLS, SuperNode authentication, loopback.

    python -m deploy.local --out fairpool-out/deploy-local            (or: deploy/local.sh ...)

What runs, exactly as three organisations would run it on three machines (docs/deploy.md),
only on 127.0.0.1 and with free ports:

1. credentials (``deploy/make_credentials.py``): a private CA, the SuperLink's certificate for
   ``localhost``/``127.0.0.1``, one SuperNode authentication key pair per owner;
2. ``flower-superlink`` with ``--ssl-*`` and ``--enable-supernode-auth``;
3. each owner's public key registered with ``flwr supernode register`` (with authentication on,
   the SuperLink refuses any SuperNode whose key was not registered first);
4. one ``flower-supernode`` per owner with ``--root-certificates`` (TLS),
   ``--auth-supernode-private-key`` and ``--node-config 'owner-name=... data-path=...'``;
5. ``flwr run`` of a job with ``simulated: false`` over a connection that trusts only the CA;
6. the report lands in ``--out``; every process started here is stopped on the way out,
   on success, on failure and on SIGTERM/SIGINT.

Processes are started in their own sessions and stopped with their descendants (Flower's
SuperExec and app processes are detached children), then anything still naming the private
work directory on its command line is stopped too: leftover SuperLinks are a known trap.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.config.games import ValuationSettings
from common.config.job import OwnerEntry, ValuationJob
from common.embedded.market import Market, default_profiles, make_market
from common.errors import ConfigError, FairPoolError
from common.storage.progress import PROGRESS_FILE, follow
from deploy.make_credentials import Layout, Request, make_credentials
from deploy.make_job import write_run
from server.federation.run import ERROR_FILE
from server.federation.simulation import flower_env, flwr_executable, free_port, stop_local_superlink
from server.report.schema import REPORT_JSON

DEFAULT_OWNERS = ("clean", "noisy", "flipped")
CONNECTION = "fairpool-tls"
LOG_DIR = "logs"
EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1


@dataclass(frozen=True)
class LoopbackSettings:
    """What the loopback federation values: owners of the embedded market, seed, training size."""

    out: Path
    owners: tuple[str, ...] = DEFAULT_OWNERS
    seed: int = 0
    scale: int = 320
    eval_size: int = 200
    epochs: float | None = None
    timeout_s: float = 900.0
    audit: int = 0
    """Coalitions the federation retrains to check the arithmetic (every local owner consents)."""
    pid_file: Path | None = None
    work_dir: Path | None = None


# --------------------------------------------------------------------------- commands (pure)


def superlink_command(port: int, layout: Layout, database: Path) -> list[str]:
    """``flower-superlink`` serving Fleet, Control and Runtime APIs over TLS on one port."""
    return ["flower-superlink",
            "--ssl-ca-certfile", str(layout.superlink_dir / "ca.pem"),
            "--ssl-certfile", str(layout.server_cert),
            "--ssl-keyfile", str(layout.server_key),
            "--enable-supernode-auth",
            "--host", "127.0.0.1", "--port", str(port),
            "--database", str(database),
            "--disable-runtime-dependency-installation"]


def node_config(owner: str, data_path: str | Path, signing_key: str | Path | None = None,
                allow_audit: bool = False) -> str:
    """The SuperNode's ``--node-config``: the ClientApp reads its identity, data, signing key and
    audit consent from it."""
    quote = lambda v: '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
    config = f"owner-name={quote(owner)} data-path={quote(data_path)}"
    config += f" signing-key={quote(signing_key)}" if signing_key else ""
    return config + (" allow-audit=true" if allow_audit else "")


def supernode_command(superlink: str, runtime_port: int, layout: Layout, owner: str, data_path: str | Path,
                      max_retries: int | None = None, allow_audit: bool = False) -> list[str]:
    """``flower-supernode`` of ``owner``: TLS to the SuperLink (CA pinned), its authentication key, and
    a node config naming its data and the key that signs its submissions."""
    command = ["flower-supernode",
               "--superlink", superlink,
               "--root-certificates", str(layout.owner_dir(owner) / "ca.pem"),
               "--auth-supernode-private-key", str(layout.supernode_key(owner)),
               "--host", "127.0.0.1", "--port", str(runtime_port),
               "--node-config", node_config(owner, data_path, layout.signing_key(owner), allow_audit)]
    if max_retries is not None:
        command += ["--max-retries", str(max_retries)]
    return command


def write_connection(flwr_home: Path, address: str, root_certificates: Path | None, name: str = CONNECTION) -> Path:
    """A ``flwr`` CLI config whose default connection reaches ``address`` over TLS.

    ``root_certificates`` pins the private CA; ``None`` leaves the CLI with the system's trust
    store (which must then refuse the SuperLink: used by the tests).
    """
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{name}"', "", f"[superlink.{name}]", f'address = "{address}"']
    if root_certificates is not None:
        lines.append(f'root-certificates = "{Path(root_certificates).resolve()}"')
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def deployed_job(market: Market, layout: Layout, owners: Sequence[str], out_dir: Path, seed: int,
                 epochs: float | None = None, run_id: str | None = None, audit: int = 0) -> ValuationJob:
    """A job whose owners are real SuperNodes: names and signing public keys, no data paths.

    Owners' submissions must carry signatures by their keys; the coordinator's key signs the
    report; adapters stored in the ledger are sealed with a storage key under ``OUT/keys``.
    """
    from common.embedded.base_model import build_base_model
    from common.embedded.default_job import new_run_id, spec_for, with_trust_material
    from common.trust.signing import load_public_key, public_key_text

    unknown = [o for o in owners if o not in market.owners]
    if unknown:
        raise ConfigError(f"--owners {unknown[0]!r}: not an owner of the embedded market ({', '.join(market.owners)})")
    spec = spec_for(str(build_base_model()), seed=seed, **({"epochs": epochs} if epochs is not None else {}))
    entries = tuple(OwnerEntry(name, public_key=public_key_text(load_public_key(layout.signing_pub(name))))
                    for name in owners)
    job = ValuationJob(run_id=run_id or new_run_id(), owners=entries, eval_path=str(market.eval_path),
                       out_dir=str(out_dir), spec=spec, simulated=False, valuation=ValuationSettings(audit=audit))
    return with_trust_material(job, coordinator_key=layout.coordinator_signing_key)


def simulated_twin(job: ValuationJob, market: Market, out_dir: Path) -> ValuationJob:
    """The same valuation with simulated owners (data paths in the roster, no keys): the reference
    a deployment's values and adapters are checked against."""
    return dataclasses.replace(job, run_id=job.run_id + "-sim", out_dir=str(out_dir), simulated=True,
                               coordinator_key="", storage_key="",
                               owners=tuple(OwnerEntry(o.name, str(market.owners[o.name])) for o in job.owners))


# --------------------------------------------------------------------------- processes


def _children() -> dict[int, list[int]]:
    """Parent pid → child pids, from /proc (Linux)."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, also the ones that started their own session."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie has finished: only its parent's bookkeeping remains)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2:].split()[0] != "Z"


class Processes:
    """The processes this run started; :meth:`stop` ends them and everything they spawned.

    With ``pid_file`` each started pid is recorded there (and the file emptied once all are
    stopped), so the shell wrapper can still clean up if this interpreter is killed outright.
    """

    def __init__(self, log_dir: Path, env: dict[str, str], pid_file: Path | None = None) -> None:
        self.log_dir, self.env, self.pid_file = log_dir, env, pid_file
        self.started: dict[str, subprocess.Popen] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        with (self.log_dir / f"{name}.log").open("w") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True, cwd=self.log_dir)
        self.started[name] = proc
        if self.pid_file is not None:
            with self.pid_file.open("a") as fh:
                fh.write(f"{proc.pid}\n")
        return proc

    def log(self, name: str, tail: int = 2000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every started process, its group and its descendants; SIGKILL what remains."""
        targets: set[int] = set()
        for proc in self.started.values():
            if proc.poll() is None:
                targets.add(proc.pid)
            targets.update(descendants(proc.pid))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self.started.values():
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            for pid in targets:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                for proc in self.started.values():
                    proc.poll()  # reap our own children so they do not linger as zombies
                if not any(_alive(pid) for pid in targets):
                    break
                time.sleep(0.1)
            targets = {pid for pid in targets if _alive(pid)}
            if not targets:
                break
        for proc in self.started.values():
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        if self.pid_file is not None and self.pid_file.exists():
            self.pid_file.write_text("")


# --------------------------------------------------------------------------- steps


def wait_for_tls(port: int, ca_file: Path, timeout_s: float, alive=lambda: True) -> None:
    """Until the SuperLink completes a TLS handshake that verifies against the private CA."""
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                with context.wrap_socket(sock, server_hostname="127.0.0.1"):
                    return
        except (OSError, ssl.SSLError) as exc:
            if not alive() or time.monotonic() > deadline:
                raise FairPoolError(f"the SuperLink on 127.0.0.1:{port} did not come up over TLS: {exc}") from exc
            time.sleep(0.3)


def flwr_cli(env: dict[str, str], *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([flwr_executable(), *args], capture_output=True, text=True, env=env, timeout=timeout_s)


def _json_out(proc: subprocess.CompletedProcess) -> dict:
    text = proc.stdout
    try:
        return json.loads(text[text.index("{"):])
    except ValueError:
        return {}


def register_supernode(env: dict[str, str], public_key: Path, name: str, connection: str = CONNECTION) -> int:
    """Register a SuperNode's public key with the SuperLink; return the node id it will get."""
    proc = flwr_cli(env, "supernode", "register", str(public_key), connection, "--name", name, "--format", "json")
    node_id = _json_out(proc).get("node-id")
    if proc.returncode != 0 or not node_id:
        raise FairPoolError(f"flwr supernode register {public_key} failed: {(proc.stdout + proc.stderr)[-800:]}")
    return int(node_id)


def list_supernodes(env: dict[str, str], connection: str = CONNECTION) -> dict[int, str]:
    """Node id → status (registered, online, offline, ...) as the SuperLink sees them."""
    proc = flwr_cli(env, "supernode", "list", connection, "--format", "json")
    return {int(n["node-id"]): n["status"] for n in _json_out(proc).get("nodes", [])}


def wait_until_online(env: dict[str, str], node_ids: Sequence[int], timeout_s: float, processes: Processes) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = list_supernodes(env)
        if all(status.get(n) == "online" for n in node_ids):
            return
        for name, proc in processes.started.items():
            if proc.poll() is not None:
                raise FairPoolError(f"{name} exited with status {proc.returncode}:\n{processes.log(name)}")
        if time.monotonic() > deadline:
            raise FairPoolError(f"SuperNodes not online after {timeout_s:.0f}s: {status}")
        time.sleep(1.0)


def run_job(env: dict[str, str], app_dir: Path, job: ValuationJob, processes: Processes, timeout_s: float) -> dict:
    """``flwr run`` the app against the TLS connection; follow progress; return the report."""
    out = Path(job.out_dir)
    offset = 0
    proc = processes.start("flwr-run", [flwr_executable(), "run", str(app_dir), CONNECTION, "--stream"])
    deadline = time.monotonic() + timeout_s
    finished = False
    while not finished:
        events, offset = follow(out / PROGRESS_FILE, offset)
        for event in events:
            print(f"[{event['stage']}] {event['message']}", file=sys.stderr, flush=True)
        finished = any(e["stage"] in ("done", "error") for e in events)
        if not finished and proc.poll() is not None:
            time.sleep(1.0)  # the last progress lines may land just after the CLI returns
            finished = True
            if not (out / REPORT_JSON).exists() and not (out / ERROR_FILE).exists():
                raise FairPoolError(f"flwr run exited with status {proc.returncode} and no report:\n"
                                    f"{processes.log('flwr-run')}")
        if time.monotonic() > deadline:
            raise FairPoolError(f"the deployed run did not finish within {timeout_s:.0f}s; see {processes.log_dir}")
        time.sleep(0.25)
    try:  # `flwr run --stream` returns once the SuperLink closes the finished run's log stream
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    if (out / ERROR_FILE).exists():
        raise FairPoolError(json.loads((out / ERROR_FILE).read_text())["error"])
    return json.loads((out / REPORT_JSON).read_text())


def run_loopback(settings: LoopbackSettings) -> dict:
    """The whole loopback deployment; returns the report written to ``settings.out``."""
    from common.embedded.base_model import build_base_model

    if len(set(settings.owners)) != len(settings.owners) or not settings.owners:
        raise ConfigError(f"--owners must name distinct owners, got {list(settings.owners)}")
    out = settings.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in (REPORT_JSON, ERROR_FILE, PROGRESS_FILE):
        (out / stale).unlink(missing_ok=True)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    say("preparing the embedded base model and market (cached after the first run)")
    build_base_model(progress=say)
    market = make_market(out / "market", seed=settings.seed, profiles=default_profiles(settings.scale),
                         eval_size=settings.eval_size)

    work = Path(tempfile.mkdtemp(prefix="fairpool-deploy-", dir=settings.work_dir))
    processes = None
    try:
        layout = Layout(work / "credentials")
        make_credentials(Request(out=layout.root, hosts=("127.0.0.1",), owners=settings.owners))
        shutil.copyfile(layout.coordinator_signing_pub, out / "coordinator.pub")
        job = deployed_job(market, layout, settings.owners, out, settings.seed, settings.epochs,
                           audit=settings.audit)
        _, app_dir = write_run(job)
        env = {**flower_env(work / "flwr-home"), "FAIRPOOL_CLIENT_THREADS": "1"}
        port = free_port()
        write_connection(work / "flwr-home", f"127.0.0.1:{port}", layout.coordinator_dir / "ca.pem")
        processes = Processes(out / LOG_DIR, env, settings.pid_file)

        say(f"starting flower-superlink on 127.0.0.1:{port} (TLS, SuperNode authentication)")
        link = processes.start("superlink", superlink_command(port, layout, work / "state.db"))
        wait_for_tls(port, layout.ca_cert, 60, alive=lambda: link.poll() is None)
        node_ids = {}
        for owner in settings.owners:
            node_ids[owner] = register_supernode(env, layout.supernode_pub(owner), owner)
            say(f"registered {owner}'s SuperNode key: node {node_ids[owner]}")
        for owner in settings.owners:
            processes.start(f"supernode-{owner}", supernode_command(
                f"127.0.0.1:{port}", free_port(), layout, owner, market.owners[owner], allow_audit=settings.audit > 0))
        wait_until_online(env, list(node_ids.values()), 120, processes)
        say(f"{len(node_ids)} SuperNodes online; running the valuation with flwr run")
        return run_job(env, app_dir, job, processes, settings.timeout_s)
    finally:
        if processes is not None:
            processes.stop()
        stop_local_superlink(work)  # anything still naming the work directory (detached Flower children)
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deploy/local.sh", description=(
        "Run a real Flower deployment on 127.0.0.1: a SuperLink and one SuperNode per owner, TLS with a "
        "private CA and SuperNode authentication, valuing owners of the embedded market."))
    p.add_argument("--out", type=Path, default=Path("fairpool-out/deploy-local"), help="report directory")
    p.add_argument("--owners", default=",".join(DEFAULT_OWNERS),
                   help=f"comma-separated owners of the embedded market (default {','.join(DEFAULT_OWNERS)}; "
                        "choose from clean, clean-small, noisy, flipped, duplicate)")
    p.add_argument("--seed", type=int, default=0, help="seed of the market and of training (default 0)")
    p.add_argument("--scale", type=int, default=320, help="examples of each large owner (default 320)")
    p.add_argument("--eval-size", type=int, default=200, help="held-out pairs (default 200)")
    p.add_argument("--epochs", type=float, default=None, help="DPO epochs per owner (default: the spec's, 6)")
    p.add_argument("--audit", type=int, default=0, metavar="K",
                   help="after valuation, retrain K coalitions by sequential DPO across the SuperNodes to check "
                        "the arithmetic; every owner's node config then sets allow-audit=true (default 0: none)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds the valuation run may take (default 900)")
    p.add_argument("--pid-file", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--work-dir", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_loopback's cleanup


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = LoopbackSettings(out=args.out, owners=tuple(o.strip() for o in args.owners.split(",") if o.strip()),
                                seed=args.seed, scale=args.scale, eval_size=args.eval_size, epochs=args.epochs,
                                timeout_s=args.timeout, audit=args.audit, pid_file=args.pid_file, work_dir=args.work_dir)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    started = time.monotonic()
    try:
        report = run_loopback(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except FairPoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    from server.cli.main import render_table

    print(render_table(report))
    out = settings.out.resolve()
    print(f"\nDeployed run {report['run_id']} in {time.monotonic() - started:.0f}s over TLS with SuperNode "
          f"authentication.\nReport: {out / REPORT_JSON}\nLogs: {out / LOG_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
