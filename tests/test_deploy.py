"""Deployment: credentials, the compose file, and a real TLS + SuperNode-authenticated Flower deployment.

The SuperLink tests start real ``flower-superlink``/``flower-supernode`` processes on 127.0.0.1
(a few seconds each) and stop them in fixture finalizers. The end-to-end loopback valuation is
marked ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from deploy.local import (
    Processes,
    list_supernodes,
    register_supernode,
    superlink_command,
    supernode_command,
    wait_for_tls,
    write_connection,
)
from deploy.make_credentials import Layout, Request, make_credentials
from server.federation.simulation import _processes_mentioning, flower_env, flwr_executable, free_port
from tests.processes import marked_processes

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
MAKE_CREDENTIALS = [sys.executable, str(DEPLOY / "make_credentials.py")]
RUNTIME_PATHS = ("/srv/run", "/srv/flwr-home")
"""Container paths made at run time (the run directory, Flower's home), not mounted files."""


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


def _handshake(server_cert: Path, server_key: Path, ca: Path | None, server_hostname: str) -> None:
    """A real TLS handshake between a server holding ``server_cert`` and a client trusting ``ca``."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_cert, server_key)
    client_ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl.create_default_context()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with client_ctx.wrap_socket(sock, server_hostname=server_hostname):
                pass
    finally:
        thread.join(timeout=5)
        listener.close()


# --------------------------------------------------------------------------- (a) credentials


@pytest.fixture(scope="module")
def credentials(tmp_path_factory) -> Layout:
    out = tmp_path_factory.mktemp("creds")
    proc = subprocess.run([*MAKE_CREDENTIALS, "--out", str(out), "--superlink-host", "link.example.org",
                           "--superlink-host", "10.1.2.3", "--owner", "acme", "--owner", "globex"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return Layout(out)


def test_ca_signs_a_server_certificate_with_the_requested_names(credentials):
    ca, server = _cert(credentials.ca_cert), _cert(credentials.server_cert)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    dns, ips = _sans(server)
    assert dns == {"link.example.org", "localhost"}
    assert ips == {"10.1.2.3", "127.0.0.1"}
    for name in ("link.example.org", "localhost", "127.0.0.1", "10.1.2.3"):
        _handshake(credentials.server_cert, credentials.server_key, credentials.ca_cert, name)
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        _handshake(credentials.server_cert, credentials.server_key, credentials.ca_cert, "other.example.org")
    with pytest.raises(ssl.SSLCertVerificationError):  # the system trust store does not know our CA
        _handshake(credentials.server_cert, credentials.server_key, None, "localhost")


def test_private_keys_are_0600_and_in_the_formats_flower_and_fairpool_load(credentials):
    from flwr.cli.supernode.register import try_load_public_key

    from common.trust.signing import load_private_key, load_public_key

    keys = sorted(credentials.root.rglob("*.key"))
    assert {k.name for k in keys} == {"ca.key", "server.key", "coordinator.key", "supernode.key", "acme.key",
                                       "globex.key"}
    for key in keys:
        assert (key.stat().st_mode & 0o777) == 0o600, key
    for pub in credentials.root.rglob("*.p[ue][bm]"):
        assert (pub.stat().st_mode & 0o077) != 0, f"{pub} is public material"
    for owner in ("acme", "globex"):
        private = load_ssh_private_key(credentials.supernode_key(owner).read_bytes(), None)
        public = load_ssh_public_key(credentials.supernode_pub(owner).read_bytes())
        assert isinstance(private.curve, ec.SECP384R1) and private.public_key() == public
        assert try_load_public_key(credentials.supernode_pub(owner))  # what `flwr supernode register` reads
        signing = load_private_key(credentials.signing_key(owner))
        assert load_public_key(credentials.signing_pub(owner)) == signing.public_key()
        assert (credentials.owner_dir(owner) / "ca.pem").read_bytes() == credentials.ca_cert.read_bytes()
    coordinator = load_private_key(credentials.coordinator_signing_key)
    assert load_public_key(credentials.coordinator_signing_pub) == coordinator.public_key()


def test_existing_credentials_are_never_overwritten_without_force(tmp_path):
    args = [*MAKE_CREDENTIALS, "--out", str(tmp_path), "--superlink-host", "127.0.0.1", "--owner", "acme"]
    assert subprocess.run(args, capture_output=True, timeout=60).returncode == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    forced = subprocess.run([*args, "--force"], capture_output=True, timeout=60)
    assert forced.returncode == 0
    assert (tmp_path / "ca" / "ca.pem").read_bytes() != before[tmp_path / "ca" / "ca.pem"]


def test_an_owner_makes_only_its_own_keys(tmp_path):
    """On an owner's machine: no CA, no server key; only what the owner holds."""
    proc = subprocess.run([*MAKE_CREDENTIALS, "--out", str(tmp_path), "--owner", "acme"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "acme.key", "acme.pub", "supernode.key", "supernode.pub"]
    bad = subprocess.run([*MAKE_CREDENTIALS, "--out", str(tmp_path / "x"), "--owner", "../evil"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "error: --owner" in bad.stderr


# --------------------------------------------------------------------------- (b) compose file


def _flower_parsers():
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    return _parse_args_run_superlink(), _parse_args_run_supernode()


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> tuple[dict, Path]:
    """The compose file, and a copy of deploy/ with everything prepare_compose makes."""
    from deploy.prepare_compose import prepare

    root = tmp_path_factory.mktemp("compose")
    for name in ("docker-compose.yml", "flwr-config.toml", "Dockerfile"):
        (root / name).write_bytes((DEPLOY / name).read_bytes())
    prepare(root, scale=64)
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text()), root


def _mounts(service: dict) -> list[tuple[str, str]]:
    return [tuple(v.split(":")[:2]) for v in service.get("volumes", [])]


def _host_path(root: Path, service: dict, container_path: str) -> Path | None:
    """The host file behind a container path, through the service's bind mounts."""
    for source, target in sorted(_mounts(service), key=lambda m: -len(m[1])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return root / source / os.path.relpath(container_path, target)
    return None


def test_compose_uses_tls_and_supernode_authentication_everywhere(compose):
    spec, _ = compose
    text = (DEPLOY / "docker-compose.yml").read_text()
    assert "--insecure" not in text and "insecure" not in (DEPLOY / "flwr-config.toml").read_text()
    services = spec["services"]
    assert set(services) == {"superlink", "register", "owner-a", "owner-b", "owner-c", "coordinator"}
    link_parser, node_parser = _flower_parsers()
    link = link_parser.parse_args(services["superlink"]["command"][1:])  # flags of the pinned Flower
    assert not link.insecure and link.enable_supernode_auth
    assert link.ssl_certfile and link.ssl_keyfile and link.ssl_ca_certfile
    from flwr.common.config import parse_config_args

    for owner in ("owner-a", "owner-b", "owner-c"):
        service = services[owner]
        assert service["command"][0] == "flower-supernode"
        node = node_parser.parse_args(service["command"][1:])
        assert not node.insecure and node.root_certificates and node.auth_supernode_private_key
        assert node.superlink == "superlink:9093"
        config = parse_config_args([node.node_config])
        assert config["owner-name"] == owner and config["data-path"] == "/data/prefs.jsonl"
        assert config["signing-key"] == f"/srv/credentials/{owner}.key"  # owners sign their submissions
        assert service["depends_on"]["register"]["condition"] == "service_completed_successfully"
    for name in ("register", "coordinator"):  # the flwr CLI's connection pins the CA
        assert ("./flwr-config.toml", "/srv/flwr-config.toml") in _mounts(services[name])
    flwr_config = (DEPLOY / "flwr-config.toml").read_text()
    assert 'address = "superlink:9093"' in flwr_config and 'root-certificates = "/srv/credentials/ca.pem"' in flwr_config
    assert "flwr run /srv/run/app fairpool --stream" in services["coordinator"]["command"][-1]


def test_every_file_the_compose_file_names_exists_after_prepare(compose):
    spec, root = compose
    for name, service in spec["services"].items():
        for source, _ in _mounts(service):
            assert source.startswith("./"), f"{name}: {source} should be relative to deploy/"
            assert (root / source).exists(), f"{name}: {source} is neither in deploy/ nor made by prepare_compose"
            assert "credentials/ca/" not in source, f"{name} must not see the CA's private key"
        for token in re.findall(r"/srv/[^\s\"'=;]+", " ".join(service["command"])):
            if "$" in token or token.startswith(RUNTIME_PATHS):
                continue
            host = _host_path(root, service, token)
            assert host is not None, f"{name}: {token} is not under any of the service's mounts"
            found = list(host.parent.glob(host.name)) if "*" in host.name else [host] if host.exists() else []
            assert found, f"{name}: {token} is not mounted from an existing file"
        command = service["command"]
        for arg in command:
            if "data-path=" in arg:
                host = _host_path(root, service, "/data/prefs.jsonl")
                assert host is not None and host.stat().st_size > 0
    # The SuperLink's certificate names the compose service and loopback (its own SuperExec).
    dns, ips = _sans(_cert(root / "credentials" / "superlink" / "server.pem"))
    assert {"superlink", "localhost"} <= dns and "127.0.0.1" in ips
    key = root / "credentials" / "owners" / "owner-a" / "supernode.key"
    assert (key.stat().st_mode & 0o777) == 0o600
    # Each owner's data directory holds only that owner's file.
    assert sorted(p.name for p in (root / "data" / "owner-b").iterdir()) == ["prefs.jsonl"]


def test_dockerfile_installs_cpu_torch_and_the_pinned_project():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in text
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    assert "pip install -c constraints.txt ." in text
    assert "COPY deploy ./deploy" not in text, "would copy deploy/credentials (private keys) into the image"
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {"deploy/credentials", "deploy/data", ".venv"} <= set(ignored)


class NativeCompose:
    """The compose services' own commands, run as local processes (no Docker engine here).

    Container paths become their bind-mount sources, ``superlink:9093`` becomes a free loopback
    port; everything else (flags, scripts, the flwr CLI config) is the compose file's text.
    """

    def __init__(self, spec: dict, root: Path, port: int) -> None:
        self.spec, self.root, self.port = spec, root, port

    def native(self, service: str, text: str) -> str:
        mounts = {target: str(self.root / source) for source, target in _mounts(self.spec["services"][service])}
        pattern = "|".join(re.escape(t) for t in sorted(mounts, key=len, reverse=True))
        text = re.sub(f"({pattern})(?=[/\\s\"']|$)", lambda m: mounts[m.group(1)], text) if mounts else text
        text = text.replace("$$", "$")  # compose's escape for a literal dollar
        return text.replace("superlink:9093", f"127.0.0.1:{self.port}").replace("9093", str(self.port))

    def command(self, service: str) -> list[str]:
        return [self.native(service, arg) for arg in self.spec["services"][service]["command"]]


# --------------------------------------------------------------------------- (d), (e) a live SuperLink


@pytest.fixture(scope="module")
def superlink(tmp_path_factory):
    """A real flower-superlink with TLS and SuperNode authentication; ``registered`` is registered."""
    work = tmp_path_factory.mktemp("superlink")
    layout = Layout(work / "credentials")
    make_credentials(Request(out=layout.root, hosts=("127.0.0.1",), owners=("registered", "stranger")))
    env = flower_env(work / "flwr-home")
    port = free_port()
    write_connection(work / "flwr-home", f"127.0.0.1:{port}", layout.coordinator_dir / "ca.pem")
    processes = Processes(work / "logs", env)
    try:
        link = processes.start("superlink", superlink_command(port, layout, work / "state.db"))
        wait_for_tls(port, layout.ca_cert, 60, alive=lambda: link.poll() is None)
        node_id = register_supernode(env, layout.supernode_pub("registered"), "registered")
        yield {"work": work, "layout": layout, "env": env, "port": port, "processes": processes,
               "node_id": node_id}
    finally:
        processes.stop()
    assert not _processes_mentioning(str(work)), "every process of the fixture must be stopped"


def _supernode(superlink, name: str, owner: str, **changes) -> subprocess.Popen:
    command = supernode_command(f"127.0.0.1:{superlink['port']}", free_port(), superlink["layout"], owner,
                                "/nonexistent.jsonl")
    for flag, value in changes.items():
        flag = "--" + flag.replace("_", "-")
        i = command.index(flag) if flag in command else len(command)
        command[i:i + 2] = [] if value is None else [flag, str(value)]
    return superlink["processes"].start(name, command)


def _wait_exit(proc: subprocess.Popen, timeout_s: float = 60) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"process {proc.args[:2]} still running after {timeout_s}s")


def test_a_registered_supernode_joins_over_tls(superlink):
    node = _supernode(superlink, "sn-registered", "registered")
    deadline = time.monotonic() + 60
    while list_supernodes(superlink["env"]).get(superlink["node_id"]) != "online":
        assert node.poll() is None, superlink["processes"].log("sn-registered")
        assert time.monotonic() < deadline, "the registered SuperNode did not come online"
        time.sleep(1)
    assert f"SuperNode ID: {superlink['node_id']}" in superlink["processes"].log("sn-registered")


def test_an_unregistered_supernode_is_refused(superlink):
    """With --enable-supernode-auth the SuperLink activates only pre-registered keys.

    Observed with flwr 1.42: the SuperLink answers the activation with HTTP 412 (API error 2004,
    "No SuperNode found with the given public key") and the SuperNode exits with status 1 after
    "Failed to activate SuperNode" (Flower exit code 305). It never receives a node id.
    """
    before = list_supernodes(superlink["env"])
    node = _supernode(superlink, "sn-stranger", "stranger")
    assert _wait_exit(node) != 0
    log = superlink["processes"].log("sn-stranger", tail=5000)
    assert "Failed to activate SuperNode" in log and "SuperNode ID" not in log
    assert "No SuperNode found with the given public key" in superlink["processes"].log("superlink", tail=100000)
    assert set(list_supernodes(superlink["env"])) == set(before) == {superlink["node_id"]}


def test_clients_without_the_ca_certificate_cannot_connect(superlink, tmp_path):
    port = superlink["port"]
    # A SuperNode with a valid registered key but no --root-certificates (system trust store).
    node = _supernode(superlink, "sn-no-ca", "registered", root_certificates=None)
    assert _wait_exit(node) != 0
    assert "CERTIFICATE_VERIFY_FAILED" in superlink["processes"].log("sn-no-ca", tail=5000)
    # A SuperNode trusting another deployment's CA.
    other = Layout(tmp_path / "other")
    make_credentials(Request(out=other.root, hosts=("127.0.0.1",), owners=("registered",)))
    node = _supernode(superlink, "sn-other-ca", "registered", root_certificates=other.ca_cert)
    assert _wait_exit(node) != 0
    assert "CERTIFICATE_VERIFY_FAILED" in superlink["processes"].log("sn-other-ca", tail=5000)
    # The flwr CLI: the same SuperLink, once with and once without the CA in its connection.
    no_ca_home = tmp_path / "flwr-home"
    write_connection(no_ca_home, f"127.0.0.1:{port}", None)
    no_ca = subprocess.run([flwr_executable(), "supernode", "list", "--format", "json"], capture_output=True,
                           text=True, timeout=60, env=flower_env(no_ca_home))
    answer = json.loads(no_ca.stdout)  # with --format json, flwr 1.42 reports failure in the JSON (status 0)
    assert answer["success"] is False and "nodes" not in answer
    assert "unavailable" in answer["error-message"]
    assert superlink["node_id"] in list_supernodes(superlink["env"])  # the CA-pinned connection works
    # The TLS handshake itself, without Flower in the way.
    for context in (ssl.create_default_context(), ssl.create_default_context(cafile=str(other.ca_cert))):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with pytest.raises(ssl.SSLCertVerificationError):
                context.wrap_socket(sock, server_hostname="127.0.0.1")


def test_superlink_refuses_node_authentication_without_tls(tmp_path):
    proc = subprocess.run(["flower-superlink", "--insecure", "--enable-supernode-auth", "--host", "127.0.0.1",
                           "--port", str(free_port())], capture_output=True, text=True, timeout=60,
                          env=flower_env(tmp_path / "flwr-home"))
    assert proc.returncode != 0
    assert "requires encrypted TLS" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- (c) end to end


def _assert_report_verifies(report: Path, coordinator_pub: Path) -> None:
    """``fairpool verify-report``: the coordinator's key signed exactly this report."""
    proc = subprocess.run([sys.executable, "-m", "server.cli.main", "verify-report", str(report), "--coordinator-key",
                           str(coordinator_pub)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout + proc.stderr


def _values(report: dict) -> dict[str, float]:
    return {name: v["value"] for name, v in report["games"][0]["values"].items()}


@pytest.mark.slow
def test_loopback_deployment_matches_the_simulation(tmp_path, base_model_dir):
    """deploy/local.sh: TLS + node auth, 3 owners; the same values and adapters as the same job with
    simulated owners, same seed. The reference runs the same ServerApp and ClientApp code over an
    in-process grid; test_end_to_end checks a Flower simulation against that same reference."""
    from common.config.job import ValuationJob
    from common.embedded.market import Market
    from deploy.local import simulated_twin
    from tests.local_federation import run_simulated_in_process

    out = tmp_path / "deployed"
    started = time.monotonic()
    mark = uuid.uuid4().hex  # every process local.sh starts carries it; other tests' processes do not
    proc = subprocess.run([str(DEPLOY / "local.sh"), "--out", str(out), "--owners", "clean,noisy,flipped",
                           "--seed", "3", "--scale", "16", "--eval-size", "30", "--epochs", "1"],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "FAIRPOOL_TEST_MARK": mark})
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    print(f"loopback deployment: {elapsed:.1f}s")
    deployed = json.loads((out / "report.json").read_text())
    job = ValuationJob.load(out / "job.json")
    assert not job.simulated and [o.data for o in job.owners] == ["", "", ""]
    assert {o["name"] for o in deployed["owners"]} == {"clean", "noisy", "flipped"}
    assert all(o["status"] == "valued" for o in deployed["owners"])
    superlink_log = (out / "logs" / "superlink.log").read_text()
    assert "Uvicorn running on https://127.0.0.1" in superlink_log
    assert superlink_log.count("[Fleet.ActivateNode] Activated") == 3
    assert not marked_processes(mark), "every deployment process must be stopped"

    assert deployed["settings"]["signatures_required"] and all(o.public_key for o in job.owners)
    _assert_report_verifies(out / "report.json", out / "coordinator.pub")

    owners = {o.name: out / "market" / "owners" / f"{o.name}.jsonl" for o in job.owners}
    market = Market(out / "market", owners, out / "market" / "eval.jsonl", ())
    simulated = run_simulated_in_process(simulated_twin(job, market, tmp_path / "simulated"))
    assert deployed["run_id"] != simulated["run_id"]
    assert _values(deployed) == pytest.approx(_values(simulated), abs=1e-9)
    assert [o["adapter_sha256"] for o in deployed["owners"]] == [o["adapter_sha256"] for o in simulated["owners"]]


@pytest.mark.slow
def test_compose_services_run_natively_with_tls_and_node_auth(compose, base_model_dir, tmp_path):
    """Every service of docker-compose.yml, in its dependency order, with its own command line."""
    spec, root = compose
    port = free_port()
    run = NativeCompose(spec, root, port)
    config = (DEPLOY / "flwr-config.toml").read_text()
    (root / "flwr-config.toml").write_text(run.native("coordinator", config))
    env = {**flower_env(tmp_path / "unused"), "FAIRPOOL_CLIENT_THREADS": "1"}
    processes = Processes(tmp_path / "logs", env)
    try:
        link = processes.start("superlink", run.command("superlink"))
        health = run.native("superlink", spec["services"]["superlink"]["healthcheck"]["test"][-1])
        deadline = time.monotonic() + 60
        while subprocess.run([sys.executable, "-c", health], capture_output=True).returncode != 0:
            assert link.poll() is None and time.monotonic() < deadline, processes.log("superlink")
            time.sleep(1)
        for name in ("register", "coordinator"):
            (tmp_path / name).mkdir()
        register = subprocess.run(run.command("register"), capture_output=True, text=True, timeout=180,
                                  env={**env, "FLWR_HOME": str(tmp_path / "register")})
        assert register.returncode == 0, register.stdout + register.stderr
        assert register.stdout.count("registered successfully") == 3
        for owner in ("owner-a", "owner-b", "owner-c"):
            processes.start(owner, run.command(owner) + ["--port", str(free_port())])
        coordinator = subprocess.run(run.command("coordinator"), capture_output=True, text=True, timeout=900,
                                     cwd=ROOT, env={**env, "FLWR_HOME": str(tmp_path / "coordinator")})
        assert coordinator.returncode == 0, coordinator.stdout[-3000:] + coordinator.stderr[-3000:]
    finally:
        processes.stop()
    report = json.loads((root / "out" / "report.json").read_text())
    assert {o["name"]: o["status"] for o in report["owners"]} == {"owner-a": "valued", "owner-b": "valued",
                                                                    "owner-c": "valued"}
    values = _values(report)
    assert values["owner-a"] > 0 > values["owner-c"]  # clean's data helps, flipped's hurts
    assert report["settings"]["signatures_required"]
    _assert_report_verifies(root / "out" / "report.json", root / "credentials" / "coordinator" / "coordinator.pub")
    assert not _processes_mentioning(str(root))
