"""Ed25519 identities and signatures: owners' submissions, the coordinator's report, bearer tokens.

Why signatures on top of TLS: TLS only protects a connection while it is open. An owner who
later disputes a payout needs evidence that outlives the connection: the coordinator signs
``report.json`` so anyone holding its public key can check, offline, that the published values
are the ones it computed, and each owner signs a claim binding its adapter digest to one run, so
the coordinator can prove which adapter an owner submitted (and nobody can replay it into
another run: the claim names the run and a fresh nonce).

Everything signed is *domain-separated* (a fixed prefix per kind of message) so a signature
made for one purpose can never be presented as valid for another, and is computed over
:func:`common.trust.canonical.canonical_json`, whose bytes survive a ``json.dumps``/``json.loads`` round trip: a
report keeps verifying after it has been written to disk, pretty-printed and read back.

Pure: no Flower, no torch. Only :mod:`cryptography` (the audited OpenSSL bindings).
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import hashlib
import json
import math
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import ConfigError, FairPoolError
from common.storage.atomic import temp_beside
from common.storage.private_files import make_private_dir
from common.trust.canonical import canonical_json

SUBMISSION_DOMAIN = b"fairpool-submission-v1\n"
REPORT_DOMAIN = b"fairpool-report-v1\n"
TOKEN_DOMAIN = b"fairpool-token-v1\n"
ALGORITHM = "ed25519"
CLOCK_SKEW_S = 60.0
"""How far in the future a token's timestamp may be: clocks of two machines are never equal."""

_RAW_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


class SignatureError(FairPoolError):
    """A signature, signed report or token does not verify; the message says why."""


# --------------------------------------------------------------------------- keys


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key (from the operating system's CSPRNG)."""
    return Ed25519PrivateKey.generate()


def _check_key_name(name: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(f"key name {name!r}: use a plain file name (no path separators)")


def save_keypair(
    key: Ed25519PrivateKey,
    out_dir: str | Path,
    name: str,
    passphrase: bytes | None = None,
    force: bool = False,
) -> tuple[Path, Path]:
    """Write ``NAME.key`` (PKCS8 PEM, mode 0600) and ``NAME.pub`` (SubjectPublicKeyInfo PEM).

    The private key is encrypted with the best scheme the library offers when a passphrase is
    given. Existing files are kept unless ``force``: overwriting a key silently would orphan
    every signature made with it. Both files are written to temporary names first and renamed
    into place, so a crash never leaves a half-written key.
    """
    _check_key_name(name)
    if passphrase is not None and not passphrase:
        raise ConfigError("the passphrase is empty: give a non-empty one, or none for an unencrypted key")
    out = Path(out_dir).expanduser()
    key_path, pub_path = out / f"{name}.key", out / f"{name}.pub"
    if not force:
        existing = [str(p) for p in (key_path, pub_path) if p.exists()]
        if existing:
            raise ConfigError(f"{existing[0]}: already exists; refusing to overwrite a key (use `force`)")
    try:
        make_private_dir(out)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the key directory: {exc.strerror or exc}") from None
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    tmp_key = temp_beside(key_path, private_pem, 0o600)
    try:
        tmp_pub = temp_beside(pub_path, public_pem, 0o644)
    except BaseException:
        tmp_key.unlink(missing_ok=True)
        raise
    os.replace(tmp_key, key_path)
    os.replace(tmp_pub, pub_path)
    return key_path, pub_path


def load_private_key(path: str | Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Read an Ed25519 private key written by :func:`save_keypair` (or ``openssl genpkey``).

    Refuses a key file that group or others may read (on POSIX): a private key anyone on the
    machine can copy no longer identifies its owner.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: no such private key file")
    if os.name == "posix":
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"{p}: private key is readable by other users (mode {mode:03o}); "
                              f"fix it with: chmod 600 {p}")
    data = p.read_bytes()
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise ConfigError(f"{p}: is a public key; give the private key file (NAME.key)")
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{p}: not a PEM private key")
    encrypted = b"ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data
    if encrypted and not passphrase:
        raise ConfigError(f"{p}: the private key is encrypted; give its passphrase")
    if not encrypted and passphrase:
        raise ConfigError(f"{p}: the private key is not encrypted, but a passphrase was given")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            raise ConfigError(f"{p}: cannot decrypt the private key: wrong passphrase") from None
        raise ConfigError(f"{p}: not a readable PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{p}: is a {type(key).__name__.lstrip('_')} key; FairPool uses Ed25519 keys "
                          "(make one with: fairpool keys generate)")
    return key


def _public_from_pem(data: bytes, where: str) -> Ed25519PublicKey:
    if b"PRIVATE KEY-----" in data:
        raise ConfigError(f"{where}: is a private key; give the public key (NAME.pub)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{where}: not a readable PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where}: is not an Ed25519 public key")
    return key


def _public_from_base64(text: str) -> Ed25519PublicKey | None:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _RAW_KEY_BYTES:
        return None
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_key(path_or_pem: str | Path) -> Ed25519PublicKey:
    """A public key from a PEM file, PEM text, or base64 of the 32 raw bytes (file or text).

    Accepting the short base64 form lets a key be pasted into a command line or a config
    value; :func:`public_key_text` produces it.
    """
    if isinstance(path_or_pem, Path):
        return _public_from_file(path_or_pem)
    text = str(path_or_pem)
    if "-----BEGIN" in text:
        return _public_from_pem(text.encode("utf-8"), "the public key text")
    if len(text) < 4096 and Path(text).expanduser().is_file():
        return _public_from_file(Path(text))
    key = _public_from_base64(text)
    if key is None:
        raise ConfigError(f"public key {text[:60]!r}: no such file, and not PEM text or base64 of a "
                          f"{_RAW_KEY_BYTES}-byte Ed25519 key")
    return key


def _public_from_file(path: Path) -> Ed25519PublicKey:
    p = path.expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: no such public key file")
    data = p.read_bytes()
    if b"-----BEGIN" in data:
        return _public_from_pem(data, str(p))
    key = _public_from_base64(data.decode("ascii", errors="replace"))
    if key is None:
        raise ConfigError(f"{p}: not a PEM public key or base64 of a {_RAW_KEY_BYTES}-byte Ed25519 key")
    return key


def _raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(pub: Ed25519PublicKey) -> str:
    """The key as base64 of its 32 raw bytes: short enough for a report field or a flag."""
    return base64.b64encode(_raw_public(pub)).decode("ascii")


def fingerprint(pub: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 of the raw key: for humans comparing keys, not for crypto."""
    return hashlib.sha256(_raw_public(pub)).hexdigest()[:16]


# --------------------------------------------------------------------------- canonical bytes


MAX_REPORT_DEPTH = 64
"""Deepest nesting a signed document may have; reports need about six levels."""


REPORT_SCHEMA_VERSION = 2
"""Version of the report's layout (docs/report.md). 2: values under ``value``, labelled by ``kind``."""


class ReportVersionError(SignatureError):
    """A report of another schema version than this FairPool reads: refused, never misread."""


def check_report_version(report: dict) -> None:
    """Refuse, with one line, a report of another layout than this FairPool reads (never misread it)."""
    version = report.get("schema_version") if isinstance(report, dict) else None
    if version != REPORT_SCHEMA_VERSION:
        shown = version if version is not None else "1 (unversioned)"
        raise ReportVersionError(f"the report has schema version {shown}; this FairPool reads version "
                             f"{REPORT_SCHEMA_VERSION} (docs/report.md)")


def report_file_bytes(report: dict) -> bytes:
    """The one encoding of a report file (``report.json``, a fetched copy): indented, ASCII, finite.

    ``verify-report`` accepts a file only if its bytes are exactly this encoding of what it
    parsed, so whatever a viewer shows of the file (raw text, a browser, ``jq``) is the signed
    content: no second spelling of a number, no stray bytes, no ``NaN`` that viewers disagree on.
    """
    return (json.dumps(report, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _value in pairs:
        if key in seen:
            raise SignatureError(f"the document names key {key!r} twice in one object: refused, since a "
                                 "viewer could show another value than the one that was signed")
        seen.add(key)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise SignatureError(f"the document contains {name}, which is not JSON and which viewers read differently: "
                         "refused")


def _depth(value: Any, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise SignatureError(f"the document nests deeper than {limit} levels: refused")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def strict_json(text: str, max_depth: int = MAX_REPORT_DEPTH) -> Any:
    """Parse a signed document so that what is verified is what any viewer reads.

    Plain ``json.loads`` keeps the *last* of two equal keys while other viewers keep the
    first, so a fake block placed before the signed one would verify and still be shown:
    repeated keys are refused, and so are ``NaN``/``Infinity``. Absurd nesting is refused with
    one line, not a RecursionError.
    """
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise SignatureError(f"the document nests deeper than {max_depth} levels: refused") from None
    _depth(value, max_depth)
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _signature_bytes(signature: object) -> bytes | None:
    """Decoded signature, or None when it is not base64 of 64 bytes."""
    if not isinstance(signature, str):
        return None
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == _SIGNATURE_BYTES else None


def _verifies(pub: Ed25519PublicKey, signature: object, message: bytes) -> bool:
    raw = _signature_bytes(signature)
    if raw is None:
        return False
    try:
        pub.verify(raw, message)
    except InvalidSignature:
        return False
    return True


# --------------------------------------------------------------------------- submissions


def new_nonce() -> str:
    """A fresh 128-bit nonce (hex): makes every claim unique, so none can be replayed."""
    return secrets.token_hex(16)


@dataclasses.dataclass(frozen=True)
class SubmissionClaim:
    """What an owner asserts when it submits an adapter, signed with the owner's key.

    Binds the adapter digest to the run, the owner name, the training spec and the number of
    examples (which the ``size`` composition rule weighs by), so none of them can be changed by
    a party in the middle, nor the claim moved to another run.
    """

    run_id: str
    nonce: str
    owner: str
    adapter_sha256: str
    num_examples: int
    spec_sha256: str

    def __post_init__(self) -> None:
        for field in ("run_id", "nonce", "owner", "adapter_sha256", "spec_sha256"):
            if not isinstance(getattr(self, field), str):
                raise TypeError(f"SubmissionClaim.{field} must be a str")
        if isinstance(self.num_examples, bool) or not isinstance(self.num_examples, int):
            raise TypeError("SubmissionClaim.num_examples must be an int")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> SubmissionClaim:
        """Parse a claim received over the wire; a malformed one is a :class:`SignatureError`."""
        if not isinstance(data, dict):
            raise SignatureError("submission claim is not an object")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise SignatureError(f"submission claim lacks {', '.join(missing)}")
        try:
            return cls(**{n: data[n] for n in names})
        except TypeError as exc:
            raise SignatureError(f"submission claim: {exc}") from None

    def payload(self) -> bytes:
        """The exact bytes signed: domain prefix + canonical JSON of every field."""
        return SUBMISSION_DOMAIN + canonical_json(self.to_dict())


def sign_claim(key: Ed25519PrivateKey, claim: SubmissionClaim) -> str:
    """Base64 Ed25519 signature of ``claim.payload()``."""
    return _b64(key.sign(claim.payload()))


def verify_claim(pub: Ed25519PublicKey, claim: SubmissionClaim, signature: str) -> bool:
    """Whether ``signature`` is ``pub``'s signature of ``claim``; never raises on garbage input."""
    return _verifies(pub, signature, claim.payload())


# --------------------------------------------------------------------------- reports


def _report_payload(report: dict) -> bytes:
    return REPORT_DOMAIN + canonical_json({k: v for k, v in report.items() if k != "signature"})


def sign_report(report: dict, key: Ed25519PrivateKey) -> dict:
    """A copy of ``report`` with a ``signature`` block over everything else in it.

    Raises ``ValueError`` if the report would not read back from JSON as the same bytes (a
    non-string key, say): such a signature would fail to verify once written to disk.
    """
    body = {k: v for k, v in report.items() if k != "signature"}
    payload = _report_payload(body)
    if canonical_json(json.loads(canonical_json(body))) != canonical_json(body):
        raise ValueError("report does not survive a JSON round trip unchanged; it cannot be signed stably")
    pub = key.public_key()
    signed = copy.deepcopy(body)
    signed["signature"] = {"algorithm": ALGORITHM, "public_key": public_key_text(pub),
                           "fingerprint": fingerprint(pub), "value": _b64(key.sign(payload))}
    return signed


def verify_report(report: dict, pub: Ed25519PublicKey) -> None:
    """Check ``report`` was signed by ``pub`` and not changed since; raise :class:`SignatureError`.

    The key to trust comes from the caller, never from the report: the report's own
    ``public_key`` only serves to say *whose* signature it carries when it is not ``pub``'s.
    """
    block = report.get("signature") if isinstance(report, dict) else None
    if block is None:
        raise SignatureError("the report is not signed (no 'signature' block)")
    if not isinstance(block, dict):
        raise SignatureError("the report's 'signature' block is not an object")
    algorithm = block.get("algorithm")
    if algorithm != ALGORITHM:
        raise SignatureError(f"the report is signed with algorithm {algorithm!r}; only {ALGORITHM!r} is accepted")
    expected = fingerprint(pub)
    claimed_key = block.get("public_key")
    signer = _public_from_base64(claimed_key) if isinstance(claimed_key, str) else None
    claimed = fingerprint(signer) if signer is not None else block.get("fingerprint")
    if claimed != expected:
        raise SignatureError(f"the report was signed by key {claimed}, not by the trusted key {expected}")
    if not _verifies(pub, block.get("value"), _report_payload(report)):
        raise SignatureError(f"the signature of key {expected} does not match the report's content: "
                             "the report was altered after it was signed")
    check_report_version(report)


# --------------------------------------------------------------------------- bearer tokens


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(key: Ed25519PrivateKey, owner: str, purpose: str, timestamp: float) -> str:
    """A short-lived bearer token ``BODY.SIG`` saying "``owner`` asks for ``purpose`` at ``timestamp``".

    URL-safe base64 without padding, so it fits an HTTP header or gRPC metadata value as is.
    """
    if not owner or not purpose:
        raise ValueError("a token needs an owner and a purpose")
    body = canonical_json({"owner": owner, "purpose": purpose, "ts": float(timestamp)})
    return f"{_b64url(body)}.{_b64url(key.sign(TOKEN_DOMAIN + body))}"


def _token_body(token: str) -> tuple[bytes, bytes, dict]:
    if not isinstance(token, str) or token.count(".") != 1:
        raise SignatureError("malformed token (expected BODY.SIGNATURE)")
    body_text, sig_text = token.split(".")
    try:
        body, sig = _unb64url(body_text), _unb64url(sig_text)
        claims = json.loads(body.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise SignatureError("malformed token (not base64 JSON)") from None
    if (not isinstance(claims, dict) or not isinstance(claims.get("owner"), str)
            or not isinstance(claims.get("purpose"), str)
            or isinstance(claims.get("ts"), bool) or not isinstance(claims.get("ts"), (int, float))
            or not math.isfinite(claims["ts"])):
        raise SignatureError("malformed token (needs owner, purpose and ts)")
    return body, sig, claims


def token_owner(token: str) -> str:
    """The owner a token *claims* to come from, unverified: only to look up whose key to check it with."""
    return _token_body(token)[2]["owner"]


def verify_token(pub: Ed25519PublicKey, token: str, purpose: str, max_age_s: float, now: float) -> str:
    """The owner of a valid token; :class:`SignatureError` if forged, for another purpose or stale.

    The signature is checked before anything the token says is believed. A timestamp more than
    ``CLOCK_SKEW_S`` in the future is refused too, or a token minted ahead of time would live
    longer than ``max_age_s``.
    """
    body, sig, claims = _token_body(token)
    try:
        pub.verify(sig, TOKEN_DOMAIN + body)
    except InvalidSignature:
        raise SignatureError(f"token signature does not verify with key {fingerprint(pub)}") from None
    if claims["purpose"] != purpose:
        raise SignatureError(f"token is for {claims['purpose']!r}, not {purpose!r}")
    age = now - claims["ts"]
    if age > max_age_s:
        raise SignatureError(f"token expired {age - max_age_s:.0f} s ago (valid for {max_age_s:g} s)")
    if -age > CLOCK_SKEW_S:
        raise SignatureError(f"token is dated {-age:.0f} s in the future (clock skew allowed: {CLOCK_SKEW_S:g} s)")
    return claims["owner"]
