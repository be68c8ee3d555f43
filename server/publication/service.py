"""The coordinator's publication service: owners fetch signed reports and follow live runs over gRPC.

    fairpool serve --ledger runs/q3/ledger.sqlite --address 0.0.0.0:50061 \
                   --tls-cert server.pem --tls-key server.key --allowlist owners.toml

Why these choices:

- **Reads only the ledger.** The coordinator writes runs, reports and progress events to its
  SQLite ledger (WAL mode), so this process never talks to the coordinator: it can be started,
  stopped or crash independently, and it cannot change a report. Each RPC opens its own
  connection because sqlite3 connections belong to the thread that made them and gRPC serves
  every call on a pool thread.
- **Authentication by the owner's FairPool key**, the Ed25519 key it already signs its
  submissions with: a bearer token (``common.trust.signing.sign_token``) per call, checked against an
  allowlist of public keys. No passwords or extra PKI for owners; TLS (server certificate only)
  protects the token and the report in transit.
- **An owner sees only its runs**: those whose report (or, while running, whose job) names it.
  Other owners' payouts are their business, not the whole federation's.
- **Reports travel as the signed JSON text** and are verified by the owner on arrival, so
  trusting the server (or the TLS certificate) is not needed to trust the numbers.

The checks live in the servicer rather than an interceptor: three RPCs, one helper call each,
and the owner name the check yields is needed by the authorisation right after it.
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.errors import ConfigError
from common.status import RunStatus
from common.storage.locks import holder_alive
from common.trust.signing import (
    ReportVersionError,
    SignatureError,
    load_public_key,
    token_owner,
    verify_report,
    verify_token,
)
from common.wire import publication_pb2 as pb
from common.wire import publication_pb2_grpc as pb_grpc
from common.wire.publication import (
    PURPOSE,
    TERMINAL_STAGES,
    TOKEN_MAX_AGE_S,
    job_owner_names,
    report_owner_names,
    token_from_metadata,
)
from server.federation.ledger import Ledger

POLL_S = 0.2
"""How often WatchRun looks for new events: the ledger has no change notification."""
STREAMS_PER_OWNER = 4
"""WatchRun streams one owner may hold open at once; each holds a server thread while it lasts."""
MAX_RUN_ID_CHARS = 128
MAX_REQUEST_BYTES = 64 * 1024
"""Requests are a run id and a sequence number: anything bigger is refused by gRPC before parsing."""
UNAUTHENTICATED = ("authentication failed: send 'authorization: Bearer <token>' with a fresh token signed by "
                   "your owner key, for an owner on this server's allowlist")
"""The one message of every authentication failure, so a caller cannot learn who is allowlisted."""

Allowlist = Mapping[str, Ed25519PublicKey]


# --------------------------------------------------------------------------- configuration


def load_allowlist(path: str | Path) -> dict[str, Ed25519PublicKey]:
    """Owner name → public key from a JSON or TOML file mapping names to public-key files.

    ``{"acme": "keys/acme.pub"}`` or ``acme = "keys/acme.pub"``; a value may also be PEM text
    or base64 of the raw key. Relative paths are relative to the allowlist file, so the file
    and its keys can move together.
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--allowlist {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--allowlist {p}: cannot read: {exc}") from None
    try:
        raw = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'TOML'}: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{p}: expected a non-empty mapping of owner name to public-key file")
    keys = {}
    for name, value in raw.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{p}: owner {name!r}: the value must be a public-key file path (a string)")
        ref = value if "-----BEGIN" in value else _relative_to(p.parent, value)
        keys[_check_owner(name, str(p))] = load_public_key(ref)
    return keys


def _relative_to(base: Path, value: str) -> str:
    candidate = Path(value).expanduser()
    resolved = candidate if candidate.is_absolute() else base / candidate
    return str(resolved) if resolved.is_file() else value  # not a file: maybe base64 key text


def parse_allow(entries: Sequence[str]) -> dict[str, Ed25519PublicKey]:
    """``--allow NAME=PUBKEY`` entries (PUBKEY: a public-key file or base64 raw key)."""
    keys = {}
    for entry in entries:
        name, sep, ref = entry.partition("=")
        if not sep or not ref:
            raise ConfigError(f"--allow {entry!r}: expected NAME=PUBLIC_KEY_FILE")
        keys[_check_owner(name, "--allow")] = load_public_key(ref)
    return keys


def _check_owner(name: str, where: str) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ConfigError(f"{where}: owner name {name!r} must be non-empty without surrounding spaces")
    return name


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate chain and private key (PEM)."""

    cert: Path
    key: Path

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials, after checking both files parse: gRPC would only fail at the first handshake."""
        cert = _read_pem(self.cert, "--tls-cert")
        key = _read_pem(self.key, "--tls-key")
        try:
            x509.load_pem_x509_certificates(cert)
        except ValueError:
            raise ConfigError(f"--tls-cert {self.cert}: not a PEM certificate") from None
        try:
            serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"--tls-key {self.key}: not an unencrypted PEM private key") from None
        return grpc.ssl_server_credentials([(key, cert)])


def _read_pem(path: Path, flag: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{flag} {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read: {exc}") from None


# --------------------------------------------------------------------------- the service


class _Abort(Exception):
    """Raised inside an RPC to end it with a status; keeps each RPC's happy path linear."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class PublicationServicer(pb_grpc.PublicationServicer):
    """Serves one ledger to the owners of ``allowlist``; see the module docstring for the rules."""

    def __init__(self, ledger_path: str | Path, allowlist: Allowlist, *, coordinator_key: Ed25519PublicKey,
                 poll_s: float = POLL_S,
                 token_max_age_s: float = TOKEN_MAX_AGE_S, clock: Callable[[], float] = time.time,
                 max_streams: int = 8, streams_per_owner: int = STREAMS_PER_OWNER) -> None:
        self.ledger_path = Path(ledger_path)
        self.allowlist = dict(allowlist)
        self.coordinator_key = coordinator_key
        self.poll_s = poll_s
        self.token_max_age_s = token_max_age_s
        self.clock = clock
        self.max_streams = max_streams
        self.streams_per_owner = streams_per_owner
        self._streams: dict[str, int] = {}
        self._streams_lock = threading.Lock()

    # -- RPCs ------------------------------------------------------------------------------
    def ListRuns(  # type: ignore[return]  # context.abort raises
            self, request: pb.ListRunsRequest, context: grpc.ServicerContext) -> pb.ListRunsResponse:
        try:
            owner = self._authenticate(context)
            with Ledger(self.ledger_path) as ledger:
                runs = []
                for summary in ledger.runs():
                    run = ledger.run(summary["run_id"]) or summary
                    try:
                        if owner not in self._participants(ledger, run):
                            continue
                    except _Abort:  # a stored report that fails its signature is listed to nobody
                        continue
                    report = run.get("report")
                    runs.append(pb.RunSummary(run_id=run["run_id"], status=self._status(run),
                                              created_at=run["created_at"],
                                              num_owners=len(report.get("owners", ())) if report else None))
            return pb.ListRunsResponse(runs=runs)
        except _Abort as stop:
            context.abort(stop.code, stop.details)

    def GetReport(  # type: ignore[return]  # context.abort raises
            self, request: pb.GetReportRequest, context: grpc.ServicerContext) -> pb.Report:
        try:
            owner = self._authenticate(context)
            with Ledger(self.ledger_path) as ledger:
                run = self._authorised_run(ledger, request.run_id, owner)
            if self._status(run) == RunStatus.STALE:
                raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                             f"run {run['run_id']} is stale: its coordinator is no longer running (re-run its "
                             "command to resume it)")
            if run["status"] == RunStatus.RUNNING:
                raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"run {run['run_id']} is still running")
            if run["report"] is None:
                raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                             f"run {run['run_id']} has status {run['status']!r} and no report")
            return pb.Report(run_id=run["run_id"], status=run["status"],
                             report_json=json.dumps(run["report"], ensure_ascii=False))
        except _Abort as stop:
            context.abort(stop.code, stop.details)

    def WatchRun(self, request: pb.WatchRunRequest, context: grpc.ServicerContext) -> Iterator[pb.ProgressEvent]:
        try:
            owner = self._authenticate(context)
            self._check_run_id(request.run_id)
            self._open_stream(owner)
        except _Abort as stop:
            context.abort(stop.code, stop.details)
        try:
            ledger = Ledger(self.ledger_path)
            wake = threading.Event()
            context.add_callback(wake.set)  # a cancelled stream stops waiting at once
            try:
                try:
                    self._authorised_run(ledger, request.run_id, owner)
                except _Abort as stop:
                    context.abort(stop.code, stop.details)
                yield from self._follow(ledger, request.run_id, int(request.after_seq), context, wake)
            finally:
                ledger.close()
        finally:
            self._close_stream(owner)

    # -- helpers ---------------------------------------------------------------------------
    def _follow(self, ledger: Ledger, run_id: str, seq: int, context: grpc.ServicerContext,
                wake: threading.Event) -> Iterator[pb.ProgressEvent]:
        """Stored events after ``seq``, then new ones, until a terminal event or the run ends.

        When the run's status leaves "running" one more poll interval is waited before the last
        read: the coordinator records the status first and emits its final event just after.
        A terminal event followed by more events is not the end: the run was resumed after it.
        """
        finished = False
        while context.is_active():
            batch = ledger.events(run_id, seq)
            for seq, event in batch:
                yield _event_message(seq, event)
            if batch and batch[-1][1].get("stage") in TERMINAL_STAGES:
                return
            if finished:
                return
            run = ledger.run(run_id)
            finished = run is None or self._status(run) != RunStatus.RUNNING
            wake.wait(self.poll_s)

    def _status(self, run: Mapping) -> str:
        """The run's status, ``stale`` for a run still marked running whose coordinator has died.

        The coordinator holds the ledger's lock for its whole run (``server/federation/run.py``) and leaves its
        pid in the lock file: a dead pid means the run will never finish by itself, and streams on
        it must end rather than wait forever. The ledger itself is not written (this service only reads).
        """
        if run["status"] != RunStatus.RUNNING:
            return run["status"]
        from server.federation.run import LEDGER_LOCK

        return RunStatus.STALE if holder_alive(self.ledger_path.parent / LEDGER_LOCK) is False else RunStatus.RUNNING

    def _open_stream(self, owner: str) -> None:
        """Count a new WatchRun, or refuse it: one owner must not hold every server thread."""
        with self._streams_lock:
            mine, total = self._streams.get(owner, 0), sum(self._streams.values())
            if mine >= self.streams_per_owner:
                raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"owner {owner!r} already has {mine} WatchRun streams open (at most "
                             f"{self.streams_per_owner}); close one first")
            if total >= self.max_streams:
                raise _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"the server has {total} WatchRun streams open (at most {self.max_streams}); retry later")
            self._streams[owner] = mine + 1

    def _close_stream(self, owner: str) -> None:
        with self._streams_lock:
            self._streams[owner] -= 1
            if not self._streams[owner]:
                del self._streams[owner]

    @staticmethod
    def _check_run_id(run_id: str) -> None:
        if len(run_id) > MAX_RUN_ID_CHARS:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"run id longer than {MAX_RUN_ID_CHARS} characters")

    def _authenticate(self, context: grpc.ServicerContext) -> str:
        """The calling owner, or UNAUTHENTICATED; the token's signature is checked before its claims."""
        metadata = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        token = token_from_metadata(metadata)
        if token is None:
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)
        try:
            pub = self.allowlist.get(token_owner(token))
            if pub is None:
                raise _Abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)
            return verify_token(pub, token, PURPOSE, self.token_max_age_s, self.clock())
        except SignatureError:
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED) from None

    def _authorised_run(self, ledger: Ledger, run_id: str, owner: str) -> dict:
        self._check_run_id(run_id)
        run = ledger.run(run_id) if run_id else None
        if run is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"no run {run_id!r} in this ledger")
        if owner not in self._participants(ledger, run):
            raise _Abort(grpc.StatusCode.PERMISSION_DENIED, f"owner {owner!r} does not take part in run {run_id!r}")
        return run

    def _participants(self, ledger: Ledger, run: Mapping) -> frozenset[str]:
        """Who may see a run: the owners its report lists or, with no report yet (running, failed),
        those its job names — a live run's job is the only record of who takes part.

        The stored report decides who sees everyone's payout, so it is believed only once the
        coordinator's signature verifies: a report edited in the ledger (an outsider added to its
        owners) is refused, not used.
        """
        report = run.get("report")
        if not report:
            return job_owner_names(ledger.run_job(run["run_id"]))
        try:
            verify_report(report, self.coordinator_key)
        except ReportVersionError as exc:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"the stored report of run {run['run_id']!r}: {exc}") \
                from None
        except SignatureError:
            raise _Abort(grpc.StatusCode.DATA_LOSS, f"the stored report of run {run['run_id']!r} fails the "
                                                    "coordinator's signature: refused") from None
        return report_owner_names(report)


def _event_message(seq: int, event: Mapping) -> pb.ProgressEvent:
    return pb.ProgressEvent(seq=seq, stage=str(event.get("stage", "")), message=str(event.get("message", "")),
                            fields_json=json.dumps(dict(event), ensure_ascii=False))


# --------------------------------------------------------------------------- the server


@dataclass
class RunningServer:
    """A started server and the port it bound (useful with port 0)."""

    server: grpc.Server
    port: int

    def stop(self, grace_s: float | None = 1.0) -> None:
        self.server.stop(grace_s).wait()


def serve(ledger_path: str | Path, address: str, allowlist: Allowlist, *, coordinator_key: Ed25519PublicKey,
          tls: TlsFiles | None = None, insecure: bool = False, max_workers: int = 16,
          poll_s: float = POLL_S) -> RunningServer:
    """Start the publication service on ``address`` (``HOST:PORT``; port 0 picks a free one).

    TLS is required unless ``insecure`` is given explicitly: the bearer tokens and the reports
    must not travel in the clear by accident. Returns once the server listens.
    """
    if (tls is None) == (not insecure):
        raise ConfigError("give --tls-cert and --tls-key, or --insecure for plaintext (not both)")
    ledger = Path(ledger_path).expanduser()
    if not ledger.is_file():
        raise ConfigError(f"--ledger {ledger}: no such file (the coordinator writes ledger.sqlite in its --out)")
    if not allowlist:
        raise ConfigError("no owner may connect: give --allowlist PATH or --allow NAME=PUBKEY")
    # Streams may hold at most half the threads, so unary calls (GetReport, ListRuns) always find one;
    # calls beyond what the pool can queue are refused at once rather than piling up.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="publication"),
                         maximum_concurrent_rpcs=max_workers * 8,
                         options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES)])
    servicer = PublicationServicer(ledger, allowlist, coordinator_key=coordinator_key, poll_s=poll_s,
                                   max_streams=max(1, max_workers // 2))
    pb_grpc.add_PublicationServicer_to_server(servicer, server)
    assert insecure or tls is not None, "serve() needs TLS files unless insecure"
    try:
        port = (server.add_insecure_port(address) if insecure
                else server.add_secure_port(address, tls.credentials()))  # type: ignore[union-attr]
    except RuntimeError as exc:
        raise ConfigError(f"--address {address}: cannot listen: {exc}") from None
    if not port:
        raise ConfigError(f"--address {address}: cannot listen there")
    server.start()
    return RunningServer(server, port)
