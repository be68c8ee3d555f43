"""Encryption at rest of what the coordinator stores (owners' adapters): AES-256-GCM.

Owners' adapters are their valuable, private work product; the ledger keeps them so a crashed
run resumes without retraining, so the ledger file must not leak them. The key lives in a
separate file named in the coordinator's config (mode 0600), never in the ledger. GCM
authenticates as well as encrypts: a wrong key or a flipped byte is detected, never decoded
into garbage. The associated data binds each blob to its run and owner, so a blob moved to
another row does not open either.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common.errors import ConfigError, FairPoolError
from common.storage.atomic import atomic_write
from common.storage.private_files import FILE_MODE, make_private_dir

KEY_BYTES = 32
NONCE_BYTES = 12
_MAGIC = b"FPSEAL1"


class SealError(FairPoolError):
    """A stored blob does not open: wrong storage key, or the blob was altered."""


def generate_storage_key(path: str | Path, *, force: bool = False) -> Path:
    """Write a fresh random key (base64 text) to ``path`` with mode 0600 from creation."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; refusing to replace a storage key (stored adapters need it)")
    make_private_dir(path.parent)
    return atomic_write(path, base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n", FILE_MODE)


def load_storage_key(path: str | Path) -> bytes:
    """The 32-byte key in ``path``; a :class:`ConfigError` that says what is wrong otherwise."""
    path = Path(path)
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read storage key {path}: {exc.strerror or exc}") from exc
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise ConfigError(f"{path} is not a storage key (expected base64 of {KEY_BYTES} bytes)") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path} is not a storage key ({len(key)} bytes, expected {KEY_BYTES})")
    return key


def seal(key: bytes, plaintext: bytes, context: str) -> bytes:
    """``magic ‖ nonce ‖ AES-GCM(plaintext)`` with ``context`` as associated data."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(NONCE_BYTES)
    return _MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, context.encode())


def unseal(key: bytes, blob: bytes, context: str) -> bytes:
    """Inverse of :func:`seal`; :class:`SealError` for a wrong key, a wrong context or altered bytes."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + NONCE_BYTES + 16:
        raise SealError(f"stored blob for {context} is not a sealed FairPool blob")
    nonce = blob[len(_MAGIC): len(_MAGIC) + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(_MAGIC) + NONCE_BYTES:], context.encode())
    except InvalidTag:
        raise SealError(f"stored adapter for {context} does not decrypt: wrong storage key, or the ledger "
                        "was altered") from None


def tensors_to_bytes(tensors: Mapping[str, np.ndarray]) -> bytes:
    """Tensors as safetensors bytes (a safe format: loading it never executes code)."""
    from safetensors.numpy import save

    return save({name: np.ascontiguousarray(t) for name, t in sorted(tensors.items())})


def tensors_from_bytes(data: bytes) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    return dict(load(data))


LEDGER_MAC_INFO = b"fairpool ledger rows v1"


def ledger_mac_key(storage_key: bytes) -> bytes:
    """The key that authenticates the ledger's rows, derived from the storage key (HKDF-SHA256).

    A separate key per purpose: the storage key seals adapters with AES-GCM, this one MACs every
    other row a resume trusts, and knowing one's outputs reveals nothing about the other.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LEDGER_MAC_INFO).derive(storage_key)
