"""The owner's side of the publication service: list runs, fetch and verify reports, watch progress.

    fairpool fetch-report --server coord.example:50061 --run q3 --owner acme \
        --key acme.key --coordinator-key coordinator.pub --ca-cert ca.pem --out q3.json

A report is trusted because the coordinator's signature verifies with a public key the owner
obtained out of band, not because it came over TLS from the right host: TLS hides the token and
the numbers from onlookers, the signature proves who computed them. So :meth:`fetch_report`
returns a report only after :func:`common.trust.signing.verify_report` accepted it, and
:func:`write_report` writes nothing unless given a verified report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import ConfigError, FairPoolError
from common.storage.atomic import atomic_write
from common.trust.signing import SignatureError, report_file_bytes, sign_token, strict_json, verify_report
from common.wire import publication_pb2 as pb
from common.wire import publication_pb2_grpc as pb_grpc
from common.wire.publication import AUTH_METADATA, PURPOSE, bearer

DEFAULT_TIMEOUT_S = 10.0


class FetchError(FairPoolError):
    """The server refused or could not answer a call; ``code`` is the gRPC status (None if unknown)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str
    created_at: float
    num_owners: int | None


def channel_credentials(ca_cert: str | Path | None) -> grpc.ChannelCredentials:
    """TLS credentials trusting ``ca_cert`` (PEM), or the system's roots when None."""
    if ca_cert is None:
        return grpc.ssl_channel_credentials()
    path = Path(ca_cert).expanduser()
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"`ca_cert` {path}: no such file") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError(f"`ca_cert` {path}: not a PEM certificate")
    return grpc.ssl_channel_credentials(root_certificates=pem)


class PublicationClient:
    """One owner's connection to a publication server; a fresh token signs every call."""

    def __init__(self, address: str, owner: str, key: Ed25519PrivateKey, *, ca_cert: str | Path | None = None,
                 insecure: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.address, self.owner, self._key = address, owner, key
        self.timeout_s, self._clock = timeout_s, clock
        self._channel = (grpc.insecure_channel(address) if insecure
                         else grpc.secure_channel(address, channel_credentials(ca_cert)))
        self._stub = pb_grpc.PublicationStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "PublicationClient":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return ((AUTH_METADATA, bearer(sign_token(self._key, self.owner, PURPOSE, self._clock()))),)

    def list_runs(self) -> list[RunInfo]:
        """The runs this owner takes part in, newest first."""
        reply = self._call(self._stub.ListRuns, pb.ListRunsRequest())
        return [RunInfo(r.run_id, r.status, r.created_at, r.num_owners if r.HasField("num_owners") else None)
                for r in reply.runs]

    def report_text(self, run_id: str) -> str:
        """The report of ``run_id`` as the server sent it, NOT verified: use :meth:`fetch_report`."""
        return self._call(self._stub.GetReport, pb.GetReportRequest(run_id=run_id)).report_json

    def fetch_report(self, run_id: str, coordinator_key: Ed25519PublicKey) -> dict:
        """The report of ``run_id``, returned only if ``coordinator_key`` signed exactly this content.

        Raises :class:`FetchError` when the server refuses, :class:`SignatureError` when the report
        is unsigned, altered or signed by another key, or names another run.
        """
        text = self.report_text(run_id)
        try:
            report = strict_json(text)
        except ValueError:
            raise SignatureError(f"run {run_id}: the server sent a report that is not JSON") from None
        if not isinstance(report, dict):
            raise SignatureError(f"run {run_id}: the server sent a report that is not a JSON object")
        verify_report(report, coordinator_key)
        if report.get("run_id") != run_id:  # a validly signed report of another run is not this run's
            raise SignatureError(f"asked for run {run_id!r} but the signed report is of run {report.get('run_id')!r}")
        return report

    def watch(self, run_id: str, after_seq: int = 0) -> Iterator[dict]:
        """Progress events of ``run_id`` (each with its ``seq``) until the run ends; no deadline."""
        stream = self._stub.WatchRun(pb.WatchRunRequest(run_id=run_id, after_seq=after_seq),
                                     metadata=self._metadata())
        try:
            for message in stream:
                event = json.loads(message.fields_json) if message.fields_json else {}
                event.setdefault("stage", message.stage)
                event.setdefault("message", message.message)
                yield {"seq": message.seq, **event}
        except grpc.RpcError as exc:
            raise _fetch_error(self.address, exc) from None
        finally:
            stream.cancel()

    def _call(self, method, request):
        try:
            return method(request, metadata=self._metadata(), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _fetch_error(self.address, exc) from None


def _fetch_error(address: str, exc: grpc.RpcError) -> FetchError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "error"
    return FetchError(f"{address}: {name}: {details}", code)


def write_report(report: dict, out: str | Path) -> Path:
    """Write a verified report as pretty JSON, atomically: a reader never sees half a file."""
    path = Path(out).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, report_file_bytes(report))
