"""Offline check of a published report: the coordinator's signature and, for one owner, its adapter.

An owner who receives ``report.json`` wants two answers without trusting the coordinator's
word: *is this the report the coordinator signed?* (its public key decides) and *is the adapter
it valued under my name the one I submitted?* (the report's ``adapter_sha256`` for me must be
the digest of the adapter I still hold). Both are answered here with no network, no base
model and no torch: only the report, a public key and a PEFT adapter directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.errors import ConfigError, DataError, FairPoolError
from common.status import OwnerStatus
from common.trust.digest import tensors_sha256
from common.trust.signing import (
    SignatureError,
    fingerprint,
    load_public_key,
    report_file_bytes,
    strict_json,
    verify_report,
)

ADAPTER_WEIGHTS = "adapter_model.safetensors"

__all__ = ["VerificationError", "SignatureError", "adapter_dir_sha256", "verify_report_file"]


class VerificationError(FairPoolError):
    """The report is authentic but does not say what the owner expects (digest, status, name)."""


def _adapter_weights(adapter_dir: str | Path, owner: str) -> Path:
    directory = Path(adapter_dir).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"--adapter {directory}: no such directory")
    for candidate in (directory / ADAPTER_WEIGHTS, directory / owner / ADAPTER_WEIGHTS):
        if candidate.is_file():  # PEFT nests a non-default adapter under its name
            return candidate
    raise ConfigError(f"--adapter {directory}: no {ADAPTER_WEIGHTS} (a PEFT adapter directory, as a run "
                      "writes under adapters/NAME)")


def adapter_dir_sha256(adapter_dir: str | Path, owner: str = "") -> tuple[str, int]:
    """``(digest, number of tensors)`` of a PEFT adapter directory, as the coordinator computes it.

    PEFT saves the tensors under the same adapter-free names the owner's client digested
    (``common.model.lora.adapter_tensors``), and the coordinator valued float32 copies, so casting to
    float32 reproduces the digest in the report.
    """
    from safetensors.numpy import load_file

    path = _adapter_weights(adapter_dir, owner)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ConfigError(f"{path}: cannot read the adapter weights: {exc}") from None
    tensors = {name: np.asarray(t, dtype=np.float32) for name, t in tensors.items()}
    return tensors_sha256(tensors), len(tensors)


def _read_report(report_path: str | Path) -> tuple[dict, bytes]:
    """``(report, the file's bytes)``, parsed strictly (no repeated keys, no NaN, bounded depth)."""
    path = Path(report_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: no such report file")
    data = path.read_bytes()
    try:
        report = strict_json(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(str(path), f"not a JSON report: {exc}") from None
    if not isinstance(report, dict):
        raise DataError(str(path), "not a report (expected a JSON object)")
    return report, data


def _require_exact_bytes(path: str | Path, data: bytes, report: dict) -> None:
    """The file must be byte for byte the one encoding of its content (``report_file_bytes``).

    The signature covers the parsed content; requiring the canonical file encoding on top means
    every byte a viewer reads is accounted for — nothing a parser skips (a BOM, trailing text, a
    second spelling of a number such as ``1.50`` or ``\\u0041``) can differ between viewers.
    """
    expected = report_file_bytes(report)
    if data == expected:
        return
    at = next((i for i, (a, b) in enumerate(zip(data, expected)) if a != b), min(len(data), len(expected)))
    line = data.count(b"\n", 0, at) + 1
    raise SignatureError(f"{path}: line {line}: the file is not byte for byte the signed report as FairPool writes "
                         "it (edited or re-encoded after signing); fetch it again with `fairpool fetch-report`")


def _check_owner(report: dict, owner: str, adapter_dir: str | Path) -> list[str]:
    entries = [o for o in report.get("owners", []) if isinstance(o, dict) and o.get("name") == owner]
    if not entries:
        names = ", ".join(str(o.get("name")) for o in report.get("owners", []) if isinstance(o, dict))
        raise VerificationError(f"owner {owner!r} is not in the report (owners: {names or 'none'})")
    entry = entries[0]
    if entry.get("status") != OwnerStatus.VALUED:
        reason = entry.get("reason") or "no reason given"
        raise VerificationError(f"owner {owner!r} was not valued (status {entry.get('status')!r}: {reason})")
    expected = str(entry.get("adapter_sha256") or "")
    found, count = adapter_dir_sha256(adapter_dir, owner)
    if found != expected:
        raise VerificationError(f"owner {owner!r}: the report values adapter sha256 {expected[:16]}…, but "
                                f"{adapter_dir} holds {found[:16]}…: not the adapter the report valued")
    lines = [f"owner {owner}: valued; adapter in {adapter_dir} ({count} tensors) has sha256 {found[:16]}…, "
             "as in the report"]
    payout = report.get("payout", {})
    share = payout.get("shares", {}).get(owner) if isinstance(payout, dict) else None
    if share is not None:
        amount = payout.get("amounts", {}).get(owner)
        amount_text = f", amount {amount:g}" if amount is not None else ""
        lines.append(f"owner {owner}: payout share {share:.2%}{amount_text}")
    return lines


def verify_report_file(
    report_path: str | Path,
    coordinator_pub: Ed25519PublicKey | str | Path,
    owner: str | None = None,
    adapter_dir: str | Path | None = None,
) -> list[str]:
    """Check a report file; return one human line per check passed.

    Raises :class:`SignatureError` if the signature is missing, foreign or does not match the
    content, :class:`VerificationError` if ``owner``'s entry or adapter digest disagrees, and
    :class:`ConfigError`/:class:`DataError` for unusable inputs (missing file, bad key).
    """
    if (owner is None) != (adapter_dir is None):
        raise ConfigError("--owner and --adapter go together: give both or neither")
    pub = coordinator_pub if isinstance(coordinator_pub, Ed25519PublicKey) else load_public_key(coordinator_pub)
    report, data = _read_report(report_path)
    verify_report(report, pub)
    _require_exact_bytes(report_path, data, report)
    owners = report.get("owners", [])
    valued = sum(1 for o in owners if isinstance(o, dict) and o.get("status") == OwnerStatus.VALUED)
    games = len(report.get("games", []))
    lines = [f"signature: valid ed25519 signature by coordinator key {fingerprint(pub)}",
             f"report: run {report.get('run_id', '?')}, {len(owners)} owner{'s' * (len(owners) != 1)} "
             f"({valued} valued), {games} game{'s' * (games != 1)}; content unchanged since signing"]
    if owner is not None and adapter_dir is not None:
        lines.extend(_check_owner(report, owner, adapter_dir))
    return lines
