"""Load on ``fairpool serve`` over TLS on 127.0.0.1: one owner must not block the others.

20 well-behaved owners each make 50 calls (GetReport and ListRuns, alternating) while one owner
tries to hold 20 WatchRun streams open on a live run. Records requests/s and the latency
percentiles of the well-behaved calls, how many of the abuser's streams were admitted, and
whether any well-behaved call failed. Every loop is bounded in count and time, and traffic goes
to 127.0.0.1 only.

    .venv/bin/python benchmarks/publication.py     # prints the figures as JSON
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENTS = 20
REQUESTS = 50
ABUSIVE_STREAMS = 20


def _pki(directory: Path):
    """A CA and a server certificate for 127.0.0.1, with FairPool's own deployment helpers."""
    from cryptography.hazmat.primitives import serialization

    from deploy.make_credentials import make_ca, make_server_certificate
    from server.publication.service import TlsFiles

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca("load-test CA")
    key, cert = make_server_certificate(ca_key, ca_cert, ["localhost", "127.0.0.1"])
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (directory / "server.pem").write_bytes(cert.public_bytes(pem))
    (directory / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    return directory / "ca.pem", TlsFiles(directory / "server.pem", directory / "server.key")


def _ledger(path: Path, owners: list[str], coordinator) -> None:
    """A finished run every owner takes part in, and a live run (no terminal event yet)."""
    from common.trust.signing import REPORT_SCHEMA_VERSION, sign_report
    from server.federation.ledger import Ledger

    report = {"schema_version": REPORT_SCHEMA_VERSION, "run_id": "done",
              "owners": [{"name": o, "status": "valued"} for o in owners],
              "payout": {"shares": {o: 1 / len(owners) for o in owners}}}
    job = json.dumps({"owners": [{"name": o} for o in owners]})
    with Ledger(path) as ledger:
        ledger.start_run("done", job)
        ledger.finish_run("done", "done", sign_report(report, coordinator))
        ledger.start_run("live", job)
        ledger.add_event("live", {"stage": "train", "message": "training"})


def measure(work_dir: Path | None = None, clients: int = CLIENTS, requests: int = REQUESTS,
            abusive_streams: int = ABUSIVE_STREAMS) -> dict[str, dict]:
    import grpc

    from client.fetch import FetchError, PublicationClient
    from common.trust.signing import generate_private_key
    from server.publication.service import serve

    scratch = Path(work_dir or tempfile.mkdtemp(prefix="fairpool-load-"))
    ca, tls = _pki(scratch)
    names = [f"owner{i}" for i in range(clients)] + ["abuser"]
    keys = {name: generate_private_key() for name in names}
    coordinator = generate_private_key()
    _ledger(scratch / "ledger.sqlite", names, coordinator)
    running = serve(scratch / "ledger.sqlite", "127.0.0.1:0", {n: k.public_key() for n, k in keys.items()},
                    coordinator_key=coordinator.public_key(), tls=tls, poll_s=0.05)
    address = f"127.0.0.1:{running.port}"
    stop = threading.Event()
    admitted, refused = [], []

    def hold_stream(i: int) -> None:
        with PublicationClient(address, "abuser", keys["abuser"], ca_cert=ca, timeout_s=60) as client:
            try:
                for _ in client.watch("live"):
                    admitted.append(i)
                    while not stop.is_set():
                        stop.wait(0.05)
                    return
            except FetchError as exc:
                refused.append(str(exc))

    def owner_calls(name: str) -> tuple[list[float], list[str]]:
        latencies, errors = [], []
        with PublicationClient(address, name, keys[name], ca_cert=ca, timeout_s=10) as client:
            try:  # connect first, untimed: the figure is the latency of requests, not of 20 TLS
                client.list_runs()  # handshakes racing for one interpreter's GIL in this harness
            except (FetchError, grpc.RpcError) as exc:
                errors.append(f"connecting: {exc}")
            for k in range(requests):
                started = time.perf_counter()
                try:
                    client.fetch_report("done", coordinator.public_key()) if k % 2 == 0 else client.list_runs()
                except (FetchError, grpc.RpcError) as exc:
                    errors.append(str(exc))
                latencies.append(time.perf_counter() - started)
        return latencies, errors

    abusers = [threading.Thread(target=hold_stream, args=(i,), daemon=True) for i in range(abusive_streams)]
    try:
        for thread in abusers:
            thread.start()
        deadline = time.monotonic() + 10
        while len(admitted) + len(refused) < abusive_streams and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            results = list(pool.map(owner_calls, names[:clients]))
        wall = time.perf_counter() - started
    finally:
        stop.set()
        for thread in abusers:
            thread.join(10)
        running.stop(0)
    latencies = sorted(t for lat, _ in results for t in lat)
    errors = [e for _, errs in results for e in errs]
    p99 = latencies[max(0, int(round(0.99 * len(latencies))) - 1)]
    note = (f"{clients} connected owners × {requests} calls (GetReport/ListRuns) over TLS on 127.0.0.1 while one owner "
            f"tries to hold {abusive_streams} WatchRun streams on a live run")
    return {
        "publication_requests_per_s": {"value": round(len(latencies) / wall, 1), "unit": "requests/s", "note": note},
        "publication_p50_ms": {"value": round(statistics.median(latencies) * 1000, 2), "unit": "ms"},
        "publication_p99_ms": {"value": round(p99 * 1000, 2), "unit": "ms", "target": {"max": 1000.0},
                               "meets_target": p99 < 1.0 and not errors},
        "publication_max_ms": {"value": round(latencies[-1] * 1000, 2), "unit": "ms"},
        "publication_errors": {"value": len(errors), "unit": "calls", "examples": errors[:3]},
        "publication_abuser_streams_admitted": {"value": len(admitted), "unit": "streams",
                                                "refused": len(refused), "examples": refused[:1]},
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
