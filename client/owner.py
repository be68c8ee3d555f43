"""What an owner does when the coordinator asks it to train, without Flower in the way.

An owner's identity and data location come from its own SuperNode's configuration
(``--node-config 'owner-name="acme" data-path="/data/prefs.jsonl"'``) in a real deployment.
In the Simulation Engine every simulated SuperNode is one owner of the job's roster, chosen by
its ``partition-id``. Either way the examples are read here and never leave this process:
the reply holds adapter tensors and counts only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from client.trainer import AdapterResult, train_adapter
from common import faults
from common.data import load_preferences
from common.errors import FairPoolError
from common.spec import TrainingSpec

NODE_OWNER_KEY = "owner-name"
NODE_DATA_KEY = "data-path"
NODE_SIGNING_KEY = "signing-key"
NODE_PASSPHRASE_ENV_KEY = "signing-key-passphrase-env"

TRANSIENT_ERRORS = (OSError, TimeoutError, ConnectionError)
"""Failures worth retrying (a busy disk, a network filesystem hiccup); a data error is not."""


@dataclass(frozen=True)
class OwnerIdentity:
    name: str
    data_path: str
    signing_key: str = ""
    """Path of the owner's Ed25519 private key (``fairpool keys generate``); empty: replies unsigned."""
    passphrase_env: str = ""


def resolve_identity(node_config: Mapping[str, object], roster: Mapping[str, Sequence[str]] | None) -> OwnerIdentity:
    """Who this node is: its own node config first, else its slot in a simulated roster."""
    if NODE_OWNER_KEY in node_config:
        if NODE_DATA_KEY not in node_config:
            raise FairPoolError(f"node config sets {NODE_OWNER_KEY} but not {NODE_DATA_KEY}")
        return OwnerIdentity(str(node_config[NODE_OWNER_KEY]), str(node_config[NODE_DATA_KEY]),
                             str(node_config.get(NODE_SIGNING_KEY, "")),
                             str(node_config.get(NODE_PASSPHRASE_ENV_KEY, "")))
    if roster is not None and "partition-id" in node_config:
        index = int(node_config["partition-id"])  # type: ignore[arg-type]
        names, paths = list(roster["names"]), list(roster["paths"])
        if not 0 <= index < len(names):
            raise FairPoolError(f"simulated node {index} has no owner in a roster of {len(names)}")
        keys = list(roster.get("keys", [""] * len(names)))
        return OwnerIdentity(names[index], paths[index], keys[index] if index < len(keys) else "")
    raise FairPoolError(
        f"this SuperNode has no owner identity: start it with "
        f"--node-config '{NODE_OWNER_KEY}=\"NAME\" {NODE_DATA_KEY}=\"PATH\"'"
    )


def train_owner(spec: TrainingSpec, identity: OwnerIdentity,
                progress: Callable[[str], None] = lambda _m: None) -> AdapterResult:
    """Load and validate the owner's own data, then train its adapter."""
    faults.hit("client_training")
    examples, report = load_preferences(identity.data_path)
    result = train_adapter(spec, examples, progress=progress)
    result.dropped.update({reason: count for reason, count in report.dropped.items() if count})
    return result


def train_with_retries(spec: TrainingSpec, identity: OwnerIdentity, attempts: int = 3, backoff_s: float = 1.0,
                       progress: Callable[[str], None] = lambda _m: None) -> tuple[AdapterResult, int]:
    """:func:`train_owner`, retried on transient errors; returns the result and the attempts used.

    User mistakes (:class:`FairPoolError`: bad data, wrong base model) are never retried: they
    would fail the same way again.
    """
    for attempt in range(1, attempts + 1):
        try:
            return train_owner(spec, identity, progress), attempt
        except FairPoolError:
            raise
        except TRANSIENT_ERRORS as exc:
            if attempt == attempts:
                raise
            progress(f"transient error ({type(exc).__name__}: {exc}); retrying ({attempt}/{attempts})")
            time.sleep(backoff_s * attempt)
    raise AssertionError("unreachable")


def sign_submission(identity: OwnerIdentity, run_id: str, nonce: str, result: AdapterResult,
                    spec: TrainingSpec) -> str:
    """The owner's signature over what it submits (empty when it has no key)."""
    if not identity.signing_key:
        return ""
    from common.signing import SubmissionClaim, load_private_key, sign_claim

    passphrase = os.environ.get(identity.passphrase_env) if identity.passphrase_env else None
    key = load_private_key(identity.signing_key, passphrase.encode() if passphrase else None)
    claim = SubmissionClaim(run_id, nonce, identity.name, result.sha256, int(result.num_examples), spec.digest())
    return sign_claim(key, claim)
