"""The publication service end to end: a real gRPC server on 127.0.0.1 (ephemeral port), real
TLS from a throwaway CA, real Ed25519 tokens and report signatures, and the SQLite ledger written
by a concurrent writer. Nothing is mocked."""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from client.fetch import FetchError, PublicationClient
from common.errors import ConfigError
from common.trust.signing import (
    REPORT_SCHEMA_VERSION,
    SignatureError,
    generate_private_key,
    load_private_key,
    load_public_key,
    save_keypair,
    sign_report,
    sign_token,
)
from common.wire import publication_pb2 as pb
from common.wire import publication_pb2_grpc as pb_grpc
from common.wire.publication import AUTH_METADATA, bearer
from server.cli.main import main
from server.federation.ledger import Ledger
from server.publication.service import TlsFiles, load_allowlist, parse_allow, serve

ROOT = Path(__file__).resolve().parents[1]


def COORD(keys):  # noqa: N802 - reads as the constant it is in each call
    return load_public_key(keys["coordinator"]["pub"])
OWNERS = ("acme", "globex", "mallory")  # mallory has a key but is on no allowlist


# --------------------------------------------------------------------------- helpers


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(directory: Path, label: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA certificate (written to ``label``-ca.pem) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(f"{label} test CA")).issuer_name(_name(f"{label} test CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = directory / f"{label}-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_server_cert(directory: Path, ca_key, ca_cert: x509.Certificate) -> TlsFiles:
    """A server certificate for localhost and 127.0.0.1, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    tls = TlsFiles(directory / "server.pem", directory / "server.key")
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    tls.key.chmod(0o600)
    return tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Trusted CA + server certificate, and a second CA that signed nothing the server uses."""
    d = tmp_path_factory.mktemp("pki")
    ca_path, ca_key, ca_cert = make_ca(d, "trusted")
    other_ca, _, _ = make_ca(d, "other")
    return {"ca": ca_path, "other_ca": other_ca, "tls": make_server_cert(d, ca_key, ca_cert)}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Key pairs on disk (mode 600) for the coordinator and every owner."""
    d = tmp_path_factory.mktemp("keys")
    paths = {name: save_keypair(generate_private_key(), d, name) for name in ("coordinator", *OWNERS)}
    return {name: {"key": k, "pub": p} for name, (k, p) in paths.items()}


def report_of(run_id: str, owners: tuple[str, ...]) -> dict:
    return {"schema_version": REPORT_SCHEMA_VERSION, "run_id": run_id,
            "owners": [{"name": o, "num_examples": 320, "status": "valued"} for o in owners],
            "payout": {"budget": 1000.0, "shares": {o: round(1 / len(owners), 6) for o in owners},
                       "amounts": {o: round(1000.0 / len(owners), 2) for o in owners}}}


def job_of(owners: tuple[str, ...]) -> str:
    return json.dumps({"owners": [{"name": o, "data": None} for o in owners]})


@pytest.fixture
def ledger_path(tmp_path, keys):
    """A ledger with runs r1 (acme+globex, done), r2 (globex only, done), r3 (acme, running)
    and r4 (acme, failed without a report), all reports signed by the coordinator."""
    coordinator = load_private_key(keys["coordinator"]["key"])
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        for run_id, owners, status in (("r1", ("acme", "globex"), "done"), ("r2", ("globex",), "done"),
                                       ("r3", ("acme",), "running"), ("r4", ("acme",), "failed")):
            ledger.start_run(run_id, job_of(owners))
            if status == "done":
                ledger.finish_run(run_id, "done", sign_report(report_of(run_id, owners), coordinator))
            elif status == "failed":
                ledger.finish_run(run_id, "failed")
            time.sleep(0.002)  # distinct created_at: listing order is by creation time
    return path


@pytest.fixture
def allowlist(keys):
    return {name: load_public_key(keys[name]["pub"]) for name in ("acme", "globex")}


@pytest.fixture
def server(request, ledger_path, allowlist, pki, keys):
    running = serve(ledger_path, "127.0.0.1:0", allowlist, coordinator_key=COORD(keys), tls=pki["tls"], poll_s=0.05)
    request.addfinalizer(lambda: running.stop(0))
    return running


def client_for(server, keys, pki, owner="acme", *, key_of=None, **kwargs) -> PublicationClient:
    kwargs.setdefault("ca_cert", pki["ca"])
    client = PublicationClient(f"localhost:{server.port}", owner, load_private_key(keys[key_of or owner]["key"]),
                               timeout_s=5.0, **kwargs)
    return client


def _code(excinfo) -> grpc.StatusCode:
    return excinfo.value.code


# --------------------------------------------------------------------------- listing and reports


def test_list_runs_shows_only_the_owners_runs_newest_first(server, keys, pki):
    with client_for(server, keys, pki, "acme") as acme, client_for(server, keys, pki, "globex") as globex:
        runs = acme.list_runs()
        assert [(r.run_id, r.status, r.num_owners) for r in runs] == [
            ("r4", "failed", None), ("r3", "running", None), ("r1", "done", 2)]
        assert all(r.created_at > 0 for r in runs)
        assert [r.run_id for r in globex.list_runs()] == ["r2", "r1"]


def test_get_report_arrives_signed_and_verifies(server, keys, pki, ledger_path):
    with Ledger(ledger_path) as ledger:
        stored = ledger.run("r1")["report"]
    with client_for(server, keys, pki, "globex") as client:
        report = client.fetch_report("r1", load_public_key(keys["coordinator"]["pub"]))
    assert report == stored and report["signature"]["algorithm"] == "ed25519"


def test_a_report_signed_by_another_key_is_refused(server, keys, pki):
    with client_for(server, keys, pki, "globex") as client, pytest.raises(SignatureError, match="not by the trusted"):
        client.fetch_report("r1", load_public_key(keys["mallory"]["pub"]))


@pytest.mark.parametrize("run_id, code", [("nope", grpc.StatusCode.NOT_FOUND),
                                          ("r3", grpc.StatusCode.FAILED_PRECONDITION),
                                          ("r4", grpc.StatusCode.FAILED_PRECONDITION),
                                          ("r2", grpc.StatusCode.PERMISSION_DENIED)])
def test_get_report_statuses(server, keys, pki, run_id, code):
    with client_for(server, keys, pki, "acme") as client, pytest.raises(FetchError) as excinfo:
        client.report_text(run_id)
    assert _code(excinfo) == code


# --------------------------------------------------------------------------- watching a live run


def test_watch_follows_a_live_run_written_concurrently(server, keys, pki, ledger_path):
    with Ledger(ledger_path) as ledger:
        ledger.start_run("live", job_of(("acme",)))
        ledger.add_event("live", {"t": 0.0, "stage": "start", "message": "run live: 1 owner(s)", "total": 1})
    stages = ["train", "train", "score", "value"]

    def coordinator():  # another connection, as the coordinator's process would have
        with Ledger(ledger_path) as writer:
            for i, stage in enumerate(stages):
                time.sleep(0.05)
                writer.add_event("live", {"t": 0.1 * (i + 1), "stage": stage, "message": f"step {i}", "step": i})
            writer.finish_run("live", "done", sign_report({"schema_version": REPORT_SCHEMA_VERSION, "run_id": "live",
                                                            "owners": [{"name": "acme"}]},
                                                          load_private_key(keys["coordinator"]["key"])))
            writer.add_event("live", {"t": 1.0, "stage": "done", "message": "report written"})

    writer = threading.Thread(target=coordinator)
    with client_for(server, keys, pki, "acme") as client:
        stream = client.watch("live")
        first = next(stream)  # the stream is open before the writer starts: the rest arrive live
        writer.start()
        events = [first, *stream]
    writer.join()
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e["stage"] for e in events] == ["start", *stages, "done"]
    assert events[2]["step"] == 1 and events[2]["message"] == "step 1"

    with client_for(server, keys, pki, "acme") as client:  # resuming after seq 4 replays only the rest
        assert [e["seq"] for e in client.watch("live", after_seq=4)] == [5, 6]


def test_watch_ends_when_the_run_stops_without_a_terminal_event(server, keys, pki, ledger_path):
    with Ledger(ledger_path) as ledger:
        ledger.add_event("r3", {"t": 0.0, "stage": "start", "message": "started"})
    threading.Timer(0.2, lambda: Ledger(ledger_path).finish_run("r3", "failed")).start()
    with client_for(server, keys, pki, "acme") as client:
        started = time.monotonic()
        assert [e["stage"] for e in client.watch("r3")] == ["start"]
        assert time.monotonic() - started < 3


def test_an_earlier_error_of_a_resumed_run_does_not_end_the_stream(server, keys, pki, ledger_path):
    with Ledger(ledger_path) as ledger:  # r3 failed once, was resumed, and has now finished
        for stage in ("start", "error", "start", "value"):
            ledger.add_event("r3", {"t": 0.0, "stage": stage, "message": stage})
        ledger.finish_run("r3", "done", sign_report({"schema_version": REPORT_SCHEMA_VERSION, "run_id": "r3",
                                                 "owners": [{"name": "acme"}]},
                                                    load_private_key(keys["coordinator"]["key"])))
        ledger.add_event("r3", {"t": 1.0, "stage": "done", "message": "done"})
    with client_for(server, keys, pki, "acme") as client:
        assert [e["stage"] for e in client.watch("r3")] == ["start", "error", "start", "value", "done"]


def test_a_cancelled_watch_frees_its_server_thread(ledger_path, allowlist, keys, pki, request):
    running = serve(ledger_path, "127.0.0.1:0", allowlist, coordinator_key=COORD(keys), tls=pki["tls"], max_workers=1, poll_s=0.05)
    request.addfinalizer(lambda: running.stop(0))
    with Ledger(ledger_path) as ledger:
        ledger.add_event("r3", {"t": 0.0, "stage": "start", "message": "started"})  # r3 stays running
    with client_for(running, keys, pki, "acme") as client:
        stream = client.watch("r3")
        assert next(stream)["stage"] == "start"
        stream.close()  # cancels the call; the only worker thread must come back
        assert [r.run_id for r in client.list_runs()] == ["r4", "r3", "r1"]


def test_watch_needs_a_run_the_owner_takes_part_in(server, keys, pki):
    with client_for(server, keys, pki, "acme") as client:
        with pytest.raises(FetchError) as excinfo:
            list(client.watch("r2"))
        assert _code(excinfo) == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(FetchError) as excinfo:
            list(client.watch("nope"))
        assert _code(excinfo) == grpc.StatusCode.NOT_FOUND


# --------------------------------------------------------------------------- transport security


def test_a_plaintext_client_cannot_talk_to_the_tls_server(server, keys, pki):
    with client_for(server, keys, pki, "acme", ca_cert=None, insecure=True) as client:
        with pytest.raises(FetchError) as excinfo:
            client.list_runs()
    assert _code(excinfo) == grpc.StatusCode.UNAVAILABLE


def test_a_client_trusting_another_ca_refuses_the_server(server, keys, pki):
    with client_for(server, keys, pki, "acme", ca_cert=pki["other_ca"]) as client:
        with pytest.raises(FetchError) as excinfo:
            client.list_runs()
    assert _code(excinfo) == grpc.StatusCode.UNAVAILABLE


def test_serving_needs_tls_or_an_explicit_insecure(ledger_path, allowlist, pki, keys):
    with pytest.raises(ConfigError, match="--insecure"):
        serve(ledger_path, "127.0.0.1:0", allowlist, coordinator_key=COORD(keys))
    with pytest.raises(ConfigError, match="not both"):
        serve(ledger_path, "127.0.0.1:0", allowlist, coordinator_key=COORD(keys), tls=pki["tls"], insecure=True)
    with pytest.raises(ConfigError, match="no such file"):
        serve(ledger_path.with_name("missing.sqlite"), "127.0.0.1:0", allowlist, coordinator_key=COORD(keys), tls=pki["tls"])
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        serve(ledger_path, "127.0.0.1:0", allowlist, coordinator_key=COORD(keys), tls=TlsFiles(pki["tls"].key, pki["tls"].key))


# --------------------------------------------------------------------------- authentication


def test_unknown_owner_is_unauthenticated(server, keys, pki):
    with client_for(server, keys, pki, "mallory") as client, pytest.raises(FetchError) as excinfo:
        client.list_runs()
    assert _code(excinfo) == grpc.StatusCode.UNAUTHENTICATED and "allowlist" in str(excinfo.value)


def test_a_token_signed_with_the_wrong_key_is_unauthenticated(server, keys, pki):
    with client_for(server, keys, pki, "acme", key_of="mallory") as client, pytest.raises(FetchError) as excinfo:
        client.fetch_report("r1", load_public_key(keys["coordinator"]["pub"]))
    assert _code(excinfo) == grpc.StatusCode.UNAUTHENTICATED


def test_an_old_token_is_unauthenticated(server, keys, pki):
    with client_for(server, keys, pki, "acme", clock=lambda: time.time() - 3600) as client:
        with pytest.raises(FetchError, match="fresh token") as excinfo:
            client.list_runs()
    assert _code(excinfo) == grpc.StatusCode.UNAUTHENTICATED


def test_every_authentication_failure_says_the_same(server, keys, pki):
    """Issue 12 #11: the messages told an outsider which names are on the allowlist."""
    from server.publication.service import UNAUTHENTICATED

    details = set()
    for owner, key_of in (("mallory", None), ("acme", "mallory"), ("nobody", "mallory")):
        with client_for(server, keys, pki, owner, key_of=key_of) as client, pytest.raises(FetchError) as excinfo:
            client.list_runs()
        assert _code(excinfo) == grpc.StatusCode.UNAUTHENTICATED
        details.add(str(excinfo.value).split("UNAUTHENTICATED: ", 1)[1])
    assert details == {UNAUTHENTICATED}


@pytest.mark.parametrize("metadata", [(), ((AUTH_METADATA, "Bearer not-a-token"),), ("wrong-purpose",)])
def test_missing_or_malformed_tokens_are_unauthenticated(server, keys, pki, metadata):
    if metadata == ("wrong-purpose",):
        token = sign_token(load_private_key(keys["acme"]["key"]), "acme", "another-service", time.time())
        metadata = ((AUTH_METADATA, bearer(token)),)
    credentials = grpc.ssl_channel_credentials(pki["ca"].read_bytes())
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        stub = pb_grpc.PublicationStub(channel)
        for call in (lambda: stub.ListRuns(pb.ListRunsRequest(), metadata=metadata, timeout=5),
                     lambda: list(stub.WatchRun(pb.WatchRunRequest(run_id="r1"), metadata=metadata, timeout=5))):
            with pytest.raises(grpc.RpcError) as excinfo:
                call()
            assert excinfo.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --------------------------------------------------------------------------- the CLI


def _fetch_args(server, keys, pki, run_id, out, owner="acme"):
    return ["fetch-report", "--server", f"localhost:{server.port}", "--run", run_id, "--owner", owner,
            "--key", str(keys[owner]["key"]), "--coordinator-key", str(keys["coordinator"]["pub"]),
            "--ca-cert", str(pki["ca"]), "--out", str(out)]


def test_fetch_report_writes_the_verified_report(server, keys, pki, ledger_path, tmp_path, capsys):
    out = tmp_path / "got" / "r1.json"
    assert main(_fetch_args(server, keys, pki, "r1", out)) == 0
    with Ledger(ledger_path) as ledger:
        assert json.loads(out.read_text()) == ledger.run("r1")["report"]
    assert "verified report of run r1" in capsys.readouterr().err


def test_fetch_report_catches_a_tampered_report_and_writes_nothing(server, keys, pki, ledger_path, tmp_path, capsys):
    with Ledger(ledger_path) as ledger:
        report = ledger.run("r1")["report"]
        assert report["payout"]["amounts"]["acme"] == 500.0
        report["payout"]["amounts"]["acme"] = 600.0  # one digit changed after signing
        ledger.finish_run("r1", "done", report)
    out = tmp_path / "fetched" / "r1.json"
    assert main(_fetch_args(server, keys, pki, "r1", out)) == 1
    err = capsys.readouterr().err
    # the server itself refuses a stored report that fails the signature; the client would too
    assert "fails the coordinator's signature" in err and err.startswith("error: run r1:")
    assert not out.parent.exists()  # not even the directory, let alone a partial file


def test_fetch_report_refusals_exit_1(server, keys, pki, tmp_path, capsys):
    out = tmp_path / "x.json"
    assert main(_fetch_args(server, keys, pki, "nope", out)) == 1
    assert "NOT_FOUND" in capsys.readouterr().err and not out.exists()
    assert main(_fetch_args(server, keys, pki, "r1", out, owner="mallory")) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err and not out.exists()


def test_fetch_report_watch_streams_progress_then_fetches(server, keys, pki, ledger_path, tmp_path, capsys):
    with Ledger(ledger_path) as ledger:
        ledger.add_event("r1", {"t": 0.0, "stage": "start", "message": "run r1: 2 owner(s)"})
        ledger.add_event("r1", {"t": 9.0, "stage": "done", "message": "report written"})
    assert main([*_fetch_args(server, keys, pki, "r1", tmp_path / "r1.json"), "--watch"]) == 0
    err = capsys.readouterr().err
    assert "[1] start: run r1: 2 owner(s)" in err and "[2] done: report written" in err
    assert (tmp_path / "r1.json").exists()


def test_serve_command_end_to_end(ledger_path, keys, pki, tmp_path, request):
    """`fairpool serve` in its own process, then `fairpool fetch-report` against it."""
    allow = tmp_path / "owners.toml"
    allow.write_text(f'acme = "{keys["acme"]["pub"]}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "server.cli.main", "serve", "--ledger", str(ledger_path),
                             "--address", "127.0.0.1:0", "--tls-cert", str(pki["tls"].cert),
                             "--tls-key", str(pki["tls"].key), "--allowlist", str(allow),
                             "--coordinator-key", str(keys["coordinator"]["pub"])],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    request.addfinalizer(lambda: (proc.kill(), proc.wait()))
    line = proc.stdout.readline()
    assert line.startswith("serving ") and "(TLS) to 1 owner(s)" in line, proc.stderr.read() if not line else line
    port = int(line.split(" on ")[1].split(" ")[0].rpartition(":")[2])

    bound = types.SimpleNamespace(port=port)
    out = tmp_path / "r1.json"
    assert main(_fetch_args(bound, keys, pki, "r1", out)) == 0 and json.loads(out.read_text())["run_id"] == "r1"
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def test_serve_command_refuses_plaintext_without_insecure(ledger_path, keys, capsys):
    assert main(["serve", "--ledger", str(ledger_path), "--address", "127.0.0.1:0",
                 "--coordinator-key", str(keys["coordinator"]["pub"]), "--allow", f"acme={keys['acme']['pub']}"]) == 2
    assert "--insecure" in capsys.readouterr().err


def test_insecure_serving_works_when_asked_for(ledger_path, allowlist, keys, request):
    running = serve(ledger_path, "127.0.0.1:0", allowlist, coordinator_key=COORD(keys), insecure=True)
    request.addfinalizer(lambda: running.stop(0))
    with PublicationClient(f"127.0.0.1:{running.port}", "acme", load_private_key(keys["acme"]["key"]),
                           insecure=True, timeout_s=5) as client:
        assert [r.run_id for r in client.list_runs()] == ["r4", "r3", "r1"]


# --------------------------------------------------------------------------- allowlists


def test_allowlist_files_map_names_to_keys_relative_to_the_file(keys, tmp_path):
    acme_pub = Path(keys["acme"]["pub"])
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "acme.pub").write_bytes(acme_pub.read_bytes())
    toml = tmp_path / "owners.toml"
    toml.write_text('acme = "keys/acme.pub"\n')
    as_json = tmp_path / "owners.json"
    as_json.write_text(json.dumps({"acme": "keys/acme.pub", "globex": str(keys["globex"]["pub"])}))
    expected = load_public_key(acme_pub).public_bytes_raw()
    assert load_allowlist(toml)["acme"].public_bytes_raw() == expected
    assert sorted(load_allowlist(as_json)) == ["acme", "globex"]
    assert parse_allow([f"acme={acme_pub}"])["acme"].public_bytes_raw() == expected
    bad = tmp_path / "bad.toml"
    bad.write_text('acme = "keys/missing.pub"\n')
    with pytest.raises(ConfigError, match="missing.pub"):
        load_allowlist(bad)
    with pytest.raises(ConfigError, match="NAME=PUBLIC_KEY_FILE"):
        parse_allow(["acme"])


# --------------------------------------------------------------------------- generated code


def test_committed_generated_code_is_fresh(tmp_path):
    pytest.importorskip("grpc_tools")
    from common.wire.gen_proto import GENERATED, generate

    fresh = generate(tmp_path)
    for name, path in zip(GENERATED, fresh):
        assert path.read_bytes() == (ROOT / name).read_bytes(), f"{name} is stale: run `make proto`"


# --------------------------------------------------------------------------- one owner cannot block the others


def test_one_owner_holding_streams_does_not_block_other_owners(tmp_path):
    """Issue 12 #6: 20 streams of one owner held every worker; others got DEADLINE_EXCEEDED after 10 s.
    The same bounded scenario as ``benchmarks/publication.py`` (20 owners × 50 calls, 127.0.0.1)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import publication as load
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    figures = load.measure(tmp_path)
    assert figures["publication_errors"]["value"] == 0, figures["publication_errors"]
    assert figures["publication_max_ms"]["value"] < 1000, figures
    assert figures["publication_abuser_streams_admitted"]["value"] == 4  # STREAMS_PER_OWNER
    assert figures["publication_abuser_streams_admitted"]["refused"] == 16


def test_a_run_whose_coordinator_died_is_stale_and_its_streams_end(server, keys, pki, ledger_path):
    """Issue 12 #6: a crashed run stayed `running` forever, so its streams never ended."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (ledger_path.parent / ".ledger.lock").write_text(dead.stdout.strip() + "\n")
    with client_for(server, keys, pki, "acme") as client:
        statuses = {r.run_id: r.status for r in client.list_runs()}
        assert statuses["r3"] == "stale" and statuses["r1"] == "done"
        with pytest.raises(FetchError, match="stale") as excinfo:
            client.fetch_report("r3", load_public_key(keys["coordinator"]["pub"]))
        assert _code(excinfo) == grpc.StatusCode.FAILED_PRECONDITION
        started = time.monotonic()
        assert list(client.watch("r3")) == []
        assert time.monotonic() - started < 5


def test_oversized_run_ids_are_refused_without_being_echoed(server, keys, pki):
    with client_for(server, keys, pki, "acme") as client, pytest.raises(FetchError) as excinfo:
        client.fetch_report("x" * 5000, load_public_key(keys["coordinator"]["pub"]))
    assert _code(excinfo) in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert len(str(excinfo.value)) < 300


def test_a_report_edited_in_the_ledger_grants_no_access(server, keys, pki, ledger_path):
    """Issue 12 #1: adding `outsider` to a stored report let outsider fetch everyone's shares."""
    import sqlite3

    with sqlite3.connect(ledger_path) as db:  # globex's run r2 now "lists" acme too
        db.execute("UPDATE runs SET report = replace(report, '\"globex\"', '\"acme\"') WHERE run_id = 'r2'")
    with client_for(server, keys, pki, "acme") as client:
        assert "r2" not in {r.run_id for r in client.list_runs()}
        with pytest.raises(FetchError) as excinfo:
            client.report_text("r2")
    assert _code(excinfo) == grpc.StatusCode.DATA_LOSS and "fails the coordinator's signature" in str(excinfo.value)
