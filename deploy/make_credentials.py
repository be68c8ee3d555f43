"""Credentials of a FairPool deployment: a private CA, the SuperLink's TLS certificate, SuperNode
authentication keys and FairPool signing keys.

    python deploy/make_credentials.py --out DIR --superlink-host link.example.org --owner acme --owner globex

What each option makes (each party runs only its own part; see docs/deploy.md):

- ``--superlink-host`` (coordinator): ``DIR/ca/`` (CA key and self-signed certificate),
  ``DIR/superlink/`` (the SuperLink's TLS key and certificate, signed by the CA, with every
  given host as a subjectAltName plus ``localhost``/``127.0.0.1``, and a copy of ``ca.pem``) and
  ``DIR/coordinator/`` (the coordinator's FairPool Ed25519 signing key pair and ``ca.pem``, which
  the ``flwr`` CLI needs).
- ``--owner NAME`` (an owner): ``DIR/owners/NAME/`` with the SuperNode authentication key pair
  (``supernode.key``, ``supernode.pub``) and the owner's FairPool signing key pair
  (``NAME.key``, ``NAME.pub``); plus ``ca.pem`` when this run also made (or finds) the CA.

Why these formats: Flower 1.42 loads ``--auth-supernode-private-key`` with
``load_ssh_private_key`` and ``flwr supernode register`` reads an OpenSSH public key that must be
an EC key on a NIST curve, so SuperNode keys are ECDSA P-384 in OpenSSH format. TLS is
separate from node authentication: the CA only vouches for the SuperLink's address; a SuperNode
proves who it is with its registered key. Signing keys (Ed25519, :mod:`common.trust.signing`) make
evidence that outlives the TLS connection.

Private keys are written with mode 0600 from the start. Nothing is overwritten unless
``--force``: every target is checked before the first file is written, so a refused run changes
nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ConfigError, FairPoolError
from common.storage.atomic import atomic_write
from common.trust.signing import generate_private_key, save_keypair

LOOPBACK_NAMES = ("localhost", "127.0.0.1")
COORDINATOR_KEY_NAME = "coordinator"
CA_DAYS = 3650
SERVER_DAYS = 825
_OWNER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
EXIT_USER_ERROR = 2


@dataclass(frozen=True)
class Layout:
    """Where every file of a credentials directory lives (one place, used by scripts and tests)."""

    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.pem"

    @property
    def superlink_dir(self) -> Path:
        return self.root / "superlink"

    @property
    def server_key(self) -> Path:
        return self.superlink_dir / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.superlink_dir / "server.pem"

    @property
    def coordinator_dir(self) -> Path:
        return self.root / "coordinator"

    def owner_dir(self, name: str) -> Path:
        return self.root / "owners" / name

    def supernode_key(self, name: str) -> Path:
        return self.owner_dir(name) / "supernode.key"

    def supernode_pub(self, name: str) -> Path:
        return self.owner_dir(name) / "supernode.pub"

    def signing_key(self, name: str) -> Path:
        return self.owner_dir(name) / f"{name}.key"

    def signing_pub(self, name: str) -> Path:
        return self.owner_dir(name) / f"{name}.pub"

    @property
    def coordinator_signing_key(self) -> Path:
        return self.coordinator_dir / f"{COORDINATOR_KEY_NAME}.key"

    @property
    def coordinator_signing_pub(self) -> Path:
        return self.coordinator_dir / f"{COORDINATOR_KEY_NAME}.pub"


@dataclass(frozen=True)
class Request:
    """What to make: coordinator material when ``hosts`` is non-empty, and one set per owner."""

    out: Path
    hosts: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    loopback: bool = True
    force: bool = False
    server_days: int = SERVER_DAYS
    written: list[Path] = field(default_factory=list, compare=False)

    @property
    def layout(self) -> Layout:
        return Layout(self.out)

    @property
    def san_names(self) -> tuple[str, ...]:
        """The SuperLink certificate's names: the given hosts, then loopback, without repeats."""
        names = [*self.hosts, *(LOOPBACK_NAMES if self.loopback else ())]
        return tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------- pure helpers


def subject_alt_names(names: Sequence[str]) -> x509.SubjectAlternativeName:
    """IP literals become IP entries (clients compare addresses, not text), the rest DNS names."""
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _check_host(host: str) -> str:
    host = host.strip()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or not all(re.fullmatch(r"(\*|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)", lab) for lab in labels):
        raise ConfigError(f"--superlink-host {host!r}: not a DNS name or an IP address")
    return host


def _check_owner(name: str) -> str:
    if not _OWNER_NAME.fullmatch(name):
        raise ConfigError(f"--owner {name!r}: use letters, digits, '.', '_' or '-' (a file name and a node name)")
    return name


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _ski(public_key) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def make_ca(common_name: str = "FairPool deployment CA", days: int = CA_DAYS):
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FairPool"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _now() - dt.timedelta(minutes=5)  # tolerate a little clock skew between machines
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def make_server_certificate(ca_key, ca_cert: x509.Certificate, names: Sequence[str], days: int = SERVER_DAYS):
    """The SuperLink's TLS key and certificate for ``names`` (first name is the common name)."""
    if not names:
        raise ConfigError("the SuperLink certificate needs at least one host name or address")
    key = ec.generate_private_key(ec.SECP384R1())
    start = _now() - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FairPool"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(subject_alt_names(names), critical=False)
        .add_extension(_ski(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def supernode_keypair(comment: str) -> tuple[bytes, bytes]:
    """A SuperNode authentication key pair as (OpenSSH private PEM, OpenSSH public line).

    ECDSA on NIST P-384: what Flower itself generates and what ``flwr supernode register``
    accepts (an EC public key on a NIST curve, OpenSSH encoding).
    """
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + f" {comment}\n".encode()


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --------------------------------------------------------------------------- writing


def _write(path: Path, data: bytes, mode: int, request: Request) -> None:
    """Write atomically with ``mode`` from creation (a private key is never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, mode)
    request.written.append(path)


def planned_files(request: Request) -> list[Path]:
    """Every file this request writes (checked for existence before anything is written)."""
    lay = request.layout
    files: list[Path] = []
    if request.hosts:
        files += [lay.ca_key, lay.ca_cert, lay.server_key, lay.server_cert, lay.superlink_dir / "ca.pem",
                  lay.coordinator_signing_key, lay.coordinator_signing_pub, lay.coordinator_dir / "ca.pem"]
    for name in request.owners:
        files += [lay.supernode_key(name), lay.supernode_pub(name), lay.signing_key(name), lay.signing_pub(name)]
        if request.hosts or lay.ca_cert.exists():
            files.append(lay.owner_dir(name) / "ca.pem")
    return files


def make_credentials(request: Request) -> list[Path]:
    """Write what ``request`` asks for; return the files written. Refuses to overwrite unless forced."""
    if not request.hosts and not request.owners:
        raise ConfigError("nothing to make: give --superlink-host (coordinator) and/or --owner NAME")
    if len(set(request.owners)) != len(request.owners):
        raise ConfigError(f"--owner named twice: {sorted(request.owners)}")
    if not request.force:
        existing = [p for p in planned_files(request) if p.exists()]
        if existing:
            raise ConfigError(f"{existing[0]}: already exists; refusing to overwrite credentials (use --force)")
    lay = request.layout
    if request.hosts:
        ca_key, ca_cert = make_ca()
        server_key, server_cert = make_server_certificate(ca_key, ca_cert, request.san_names, request.server_days)
        _write(lay.ca_key, _pem_key(ca_key), 0o600, request)
        _write(lay.ca_cert, _pem_cert(ca_cert), 0o644, request)
        _write(lay.server_key, _pem_key(server_key), 0o600, request)
        _write(lay.server_cert, _pem_cert(server_cert), 0o644, request)
        _write(lay.superlink_dir / "ca.pem", _pem_cert(ca_cert), 0o644, request)
        _write(lay.coordinator_dir / "ca.pem", _pem_cert(ca_cert), 0o644, request)
        request.written.extend(save_keypair(generate_private_key(), lay.coordinator_dir, COORDINATOR_KEY_NAME,
                                            force=request.force))
    for name in request.owners:
        private, public = supernode_keypair(f"fairpool-supernode-{name}")
        _write(lay.supernode_key(name), private, 0o600, request)
        _write(lay.supernode_pub(name), public, 0o644, request)
        request.written.extend(save_keypair(generate_private_key(), lay.owner_dir(name), name, force=request.force))
        if lay.ca_cert.exists():
            _write(lay.owner_dir(name) / "ca.pem", lay.ca_cert.read_bytes(), 0o644, request)
    return list(request.written)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make_credentials.py",
        description="Make the CA, SuperLink TLS certificate, SuperNode authentication keys and FairPool "
                    "signing keys of a deployment (docs/deploy.md).")
    parser.add_argument("--out", required=True, type=Path, help="credentials directory")
    parser.add_argument("--superlink-host", action="append", default=[], metavar="NAME_OR_IP",
                        help="a DNS name or IP address owners use to reach the SuperLink; repeat. Makes the "
                             "CA, the SuperLink certificate and the coordinator's signing key")
    parser.add_argument("--owner", action="append", default=[], metavar="NAME",
                        help="an owner's SuperNode authentication key pair and signing key pair; repeat")
    parser.add_argument("--no-loopback", action="store_true",
                        help="do not add localhost and 127.0.0.1 to the SuperLink certificate (the SuperLink's own "
                             "SuperExec then cannot connect when it listens on 0.0.0.0 or 127.0.0.1)")
    parser.add_argument("--server-days", type=int, default=SERVER_DAYS,
                        help=f"validity of the SuperLink certificate in days (default {SERVER_DAYS})")
    parser.add_argument("--force", action="store_true", help="overwrite existing credentials")
    return parser


def request_from_args(argv: Sequence[str] | None = None) -> Request:
    args = build_parser().parse_args(argv)
    if args.server_days < 1:
        raise ConfigError("--server-days must be at least 1")
    return Request(out=args.out.expanduser().resolve(),
                   hosts=tuple(_check_host(h) for h in args.superlink_host),
                   owners=tuple(_check_owner(o) for o in args.owner),
                   loopback=not args.no_loopback, force=args.force, server_days=args.server_days)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        request = request_from_args(argv)
        written = make_credentials(request)
    except FairPoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    for path in written:
        private = path.suffix == ".key"
        print(f"{'private' if private else 'public '}  {path}")
    lay = request.layout
    if request.hosts:
        print(f"\nSuperLink certificate names: {', '.join(request.san_names)}")
        print(f"Keep {lay.ca_key} offline; give owners {lay.ca_cert}.")
    for name in request.owners:
        print(f"Owner {name}: send {lay.supernode_pub(name)} and {lay.signing_pub(name)} to the coordinator; "
              f"keep the .key files.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
