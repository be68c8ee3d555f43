"""What an owner does when the coordinator asks it to train, without Flower in the way.

An owner's identity and data location come from its own SuperNode's configuration
(``--node-config 'owner-name="acme" data-path="/data/prefs.jsonl"'``) in a real deployment.
In the Simulation Engine every simulated SuperNode is one owner of the job's roster, chosen by
its ``partition-id``. Either way the examples are read here and never leave this process:
the reply holds adapter tensors and counts only. An owner that already has an adapter names it
instead (``adapter-path="/models/acme-lora"``, optionally ``adapter-examples="N"``): it is
checked against the spec and the base, and sent as it is, without training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from client.trainer import AdapterResult, StepReport, train_adapter
from common.config.hardware import Hardware
from common.config.spec import TrainingSpec
from common.data import load_preferences
from common.errors import FairPoolError
from common.status import AdapterSource
from common.trust import faults

NODE_OWNER_KEY = "owner-name"
NODE_DATA_KEY = "data-path"
NODE_SIGNING_KEY = "signing-key"
NODE_PASSPHRASE_ENV_KEY = "signing-key-passphrase-env"
NODE_ADAPTER_KEY = "adapter-path"
NODE_ADAPTER_EXAMPLES_KEY = "adapter-examples"
NODE_DEVICE_KEY = "device"
NODE_DTYPE_KEY = "dtype"
NODE_AUDIT_KEY = "allow-audit"
"""``allow-audit = true``: this owner consents to the audit, i.e. to receiving models trained on
other owners' data and training one stage of a sequential DPO chain on them with its own data."""

TRANSIENT_ERRORS = (OSError, TimeoutError, ConnectionError)
"""Failures worth retrying (a busy disk, a network filesystem hiccup); a data error is not."""


@dataclass(frozen=True)
class OwnerIdentity:
    name: str
    data_path: str
    signing_key: str = ""
    """Path of the owner's Ed25519 private key (``fairpool keys generate``); empty: replies unsigned."""
    passphrase_env: str = ""
    adapter_path: str = ""
    """An adapter the owner already trained (a PEFT directory): valued as it is, no training."""
    adapter_examples: int = 0
    """Preference pairs that trained ``adapter_path``, as the owner declares them (0: not declared)."""
    allow_audit: bool = False
    """The owner's consent to the audit (:data:`NODE_AUDIT_KEY`)."""
    simulated: bool = False
    """Played by a simulated node from the coordinator's roster (not from its own node config)."""

    @property
    def source(self) -> AdapterSource:
        """How this owner's adapter comes to be (:class:`~common.status.AdapterSource`)."""
        return AdapterSource.of(self.adapter_path)


def _examples(value: object, where: str) -> int:
    try:
        count = int(str(value).strip() or 0)
    except ValueError:
        raise FairPoolError(f"{where}: {NODE_ADAPTER_EXAMPLES_KEY} must be a whole number, got {value!r}") from None
    if count < 0:
        raise FairPoolError(f"{where}: {NODE_ADAPTER_EXAMPLES_KEY} must be ≥ 0, got {count}")
    return count


def _consent(value: object) -> bool:
    """A node config's ``allow-audit``: TOML's ``true``, or the text ``true``/``yes``/``1``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0", ""):
        return False
    raise FairPoolError(f"node config: {NODE_AUDIT_KEY} must be true or false, got {value!r}")


def resolve_identity(node_config: Mapping[str, object], roster: Mapping[str, Any] | None) -> OwnerIdentity:
    """Who this node is: its own node config first, else its slot in a simulated roster."""
    if NODE_OWNER_KEY in node_config:
        has_data, has_adapter = NODE_DATA_KEY in node_config, bool(node_config.get(NODE_ADAPTER_KEY))
        if has_data == has_adapter:
            raise FairPoolError(f"node config sets {NODE_OWNER_KEY} and "
                                + (f"both {NODE_DATA_KEY} and {NODE_ADAPTER_KEY}: choose one" if has_data else
                                   f"neither {NODE_DATA_KEY} nor {NODE_ADAPTER_KEY}"))
        return OwnerIdentity(str(node_config[NODE_OWNER_KEY]), str(node_config.get(NODE_DATA_KEY, "")),
                             str(node_config.get(NODE_SIGNING_KEY, "")),
                             str(node_config.get(NODE_PASSPHRASE_ENV_KEY, "")),
                             str(node_config.get(NODE_ADAPTER_KEY, "")),
                             _examples(node_config.get(NODE_ADAPTER_EXAMPLES_KEY, 0), "node config"),
                             _consent(node_config.get(NODE_AUDIT_KEY, False)))
    if roster is not None and "partition-id" in node_config:
        index = int(node_config["partition-id"])  # type: ignore[call-overload]
        names, paths = list(roster["names"]), list(roster["paths"])
        if not 0 <= index < len(names):
            raise FairPoolError(f"simulated node {index} has no owner in a roster of {len(names)}")
        keys = list(roster.get("keys", [""] * len(names)))
        adapters = list(roster.get("adapters", [""] * len(names)))
        counts = list(roster.get("adapter_examples", [0] * len(names)))
        consents = list(roster.get("allow_audit", []))
        return OwnerIdentity(names[index], paths[index], keys[index] if index < len(keys) else "",
                             adapter_path=str(adapters[index]) if index < len(adapters) else "",
                             adapter_examples=int(counts[index]) if index < len(counts) else 0,
                             allow_audit=bool(consents[index]) if index < len(consents) else False,
                             simulated=True)
    raise FairPoolError(
        f"this SuperNode has no owner identity: start it with "
        f"--node-config '{NODE_OWNER_KEY}=\"NAME\" {NODE_DATA_KEY}=\"PATH\"'"
    )


def node_hardware(node_config: Mapping[str, object], requested: Mapping[str, object] | None) -> Hardware:
    """The owner's device and dtype: its own node config first (it knows its machine), else the
    coordinator's request (simulated owners share the coordinator's machine), else ``auto``."""
    record = dict(requested or {})
    for key in (NODE_DEVICE_KEY, NODE_DTYPE_KEY):
        if key in node_config:
            record[key] = str(node_config[key])
    return Hardware.from_record(record)


def train_owner(spec: TrainingSpec, identity: OwnerIdentity, hardware: Hardware | None = None,
                progress: Callable[[str], None] = lambda _m: None, on_step: StepReport | None = None) -> AdapterResult:
    """Load and validate the owner's own data, then train its adapter (or read its existing one)."""
    faults.hit("client_training")
    if identity.adapter_path:
        return existing_adapter(spec, identity)
    examples, report = load_preferences(identity.data_path)
    result = train_adapter(spec, examples, hardware=hardware, progress=progress, on_step=on_step)
    result.dropped.update({reason: count for reason, count in report.dropped.items() if count})
    return result


def existing_adapter(spec: TrainingSpec, identity: OwnerIdentity) -> AdapterResult:
    """The owner's already trained adapter as a reply, checked as training would check it.

    The base must be the coordinator's π₀ (fingerprint), and the adapter's own
    ``adapter_config.json`` must match the spec (rank, alpha, target modules, base): only the
    owner holds that file, the coordinator receives the tensors alone.
    """
    from client.trainer import check_base_identity
    from common.model.adapter_files import check_adapter_compatible, expected_shapes_for, read_adapter_dir

    check_base_identity(spec)
    adapter = read_adapter_dir(identity.adapter_path, identity.name)
    check_adapter_compatible(adapter, spec, expected_shapes_for(spec), spec.base_model)
    return AdapterResult(dict(adapter.tensors), int(identity.adapter_examples), {}, {"from_adapter": 1.0})


def train_with_retries(spec: TrainingSpec, identity: OwnerIdentity, attempts: int = 3, backoff_s: float = 1.0,
                       progress: Callable[[str], None] = lambda _m: None,
                       hardware: Hardware | None = None, on_step: StepReport | None = None) -> tuple[AdapterResult, int]:
    """:func:`train_owner`, retried on transient errors; returns the result and the attempts used.

    User mistakes (:class:`FairPoolError`: bad data, wrong base model) are never retried: they
    would fail the same way again.
    """
    for attempt in range(1, attempts + 1):
        try:
            return train_owner(spec, identity, hardware, progress, on_step), attempt
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
    from common.trust.passphrase import passphrase_from_env
    from common.trust.signing import SubmissionClaim, load_private_key, sign_claim

    passphrase = passphrase_from_env(identity.passphrase_env or None, what=f"node config {NODE_PASSPHRASE_ENV_KEY}")
    key = load_private_key(identity.signing_key, passphrase)
    claim = SubmissionClaim(run_id, nonce, identity.name, result.sha256, int(result.num_examples), spec.digest())
    return sign_claim(key, claim)
