"""The owner↔coordinator message, typed and versioned: the one place its records and keys are named.

A training request from the coordinator carries the records ``spec`` (the
:class:`~common.config.spec.TrainingSpec`), ``request`` (:class:`TrainingRequest`),
``hardware`` and, when owners are simulated, ``roster`` (:class:`Roster`). An owner's reply
carries ``meta`` (:class:`ReplyMeta`), ``adapter`` (float32 tensors) and ``metrics``.

Both sides import these classes, so a renamed key is one edit here, not a value that silently
reads as ``""`` or ``0`` on the other side. Each request and reply names its ``wire_version``:
a reply of another version is refused with its reason (recorded like any other refusal).
The classes hold plain values (``str``, ``int``, ``bool``, lists), which is what a Flower
``ConfigRecord`` carries; the Flower layers (``client/app.py``, ``server/federation/collect.py``)
only wrap and unwrap them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AUDIT_CONSENT_ACTION",
    "AUDIT_STAGE_ACTION",
    "WIRE_VERSION",
    "AuditConsent",
    "Records",
    "ReplyMeta",
    "Roster",
    "StageRequest",
    "TrainingRequest",
    "WireError",
    "chain_record",
]

WIRE_VERSION = 1
"""Version of this message layout; both sides send it and check the other's."""


AUDIT_CONSENT_ACTION = "audit_consent"
"""Flower action of the audit's consent question (message type ``query.audit_consent``)."""
AUDIT_STAGE_ACTION = "audit_stage"
"""Flower action of an audit stage (message type ``train.audit_stage``)."""


class WireError(ValueError):
    """A message that does not follow this layout (another version, a field of the wrong type)."""


class Records:
    """Names of the records in a message's ``RecordDict``."""

    SPEC = "spec"
    REQUEST = "request"
    HARDWARE = "hardware"
    ROSTER = "roster"
    META = "meta"
    ADAPTER = "adapter"
    METRICS = "metrics"
    STAGE = "audit_stage"
    """An audit stage request (:class:`StageRequest`); the chain so far is ``chain.0``, ``chain.1``, …"""
    CONSENT = "consent"


def chain_record(index: int) -> str:
    """The name of the ``index``-th adapter of an audit stage's chain (an ArrayRecord)."""
    return f"chain.{index}"


def _check_version(record: Mapping[str, object], what: str) -> None:
    version = record.get("wire_version", WIRE_VERSION)
    if version != WIRE_VERSION:
        raise WireError(f"{what} of wire version {version!r}; this side speaks version {WIRE_VERSION}: "
                        "owners and coordinator must run compatible FairPool versions")


def _version_problem(record: Mapping[str, object], what: str) -> str:
    """Why ``record`` cannot be read here ("" when it can): an answer of another version is
    recorded as the sender's refusal rather than raised."""
    try:
        _check_version(record, what)
    except WireError as exc:
        return str(exc)
    return ""


@dataclass(frozen=True)
class TrainingRequest:
    """The ``request`` record: which run asks, the fresh nonce the reply must carry, and the
    owners whose adapters the coordinator already holds (they need not train again)."""

    run_id: str = ""
    nonce: str = ""
    held: tuple[str, ...] = ()

    def to_record(self) -> dict[str, Any]:
        return {"wire_version": WIRE_VERSION, "run_id": self.run_id, "nonce": self.nonce, "held": list(self.held)}

    @classmethod
    def from_record(cls, record: Mapping[str, object] | None) -> TrainingRequest:
        if record is None:
            return cls()
        _check_version(record, "a training request")
        held = record.get("held", [])
        return cls(str(record.get("run_id", "")), str(record.get("nonce", "")),
                   tuple(str(h) for h in held) if isinstance(held, list) else ())


@dataclass(frozen=True)
class Roster:
    """The ``roster`` record of a simulation: partition ``i`` plays owner ``names[i]``."""

    names: tuple[str, ...]
    paths: tuple[str, ...]
    keys: tuple[str, ...]
    adapters: tuple[str, ...]
    adapter_examples: tuple[int, ...]
    progress: str = ""
    """The coordinator's progress file, on this same machine: simulated owners append their
    training steps to it, so the user sees each owner's step, loss and ETA live ("" = none)."""
    allow_audit: tuple[bool, ...] = ()
    """Each simulated owner's audit consent (a deployed owner's is its node config's ``allow-audit``)."""

    def to_record(self) -> dict[str, Any]:
        return {"names": list(self.names), "paths": list(self.paths), "keys": list(self.keys),
                "adapters": list(self.adapters), "adapter_examples": [int(x) for x in self.adapter_examples],
                "progress": self.progress, "allow_audit": [bool(x) for x in self.allow_audit]}

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> Roster:
        def column(name: str) -> list[object]:
            value = record.get(name, [])
            if not isinstance(value, list):
                raise WireError(f"roster field {name!r} is not a list")
            return value

        names = column("names")

        def texts(name: str) -> tuple[str, ...]:
            return tuple(str(x) for x in column(name) or [""] * len(names))

        examples = column("adapter_examples") or [0] * len(names)
        return cls(tuple(str(x) for x in names), texts("paths"), texts("keys"), texts("adapters"),
                   tuple(int(str(x)) for x in examples), str(record.get("progress", "") or ""),
                   tuple(x is True for x in column("allow_audit")))


@dataclass(frozen=True)
class AuditConsent:
    """The ``consent`` record of an owner's answer to the audit's question: may the coordinator
    send it models trained on other owners' data, to train one stage of a sequential DPO chain?
    ``reason`` says why not (no ``allow-audit = true``; no data to train on)."""

    owner: str
    allowed: bool = False
    reason: str = ""

    def to_record(self) -> dict[str, Any]:
        return {"wire_version": WIRE_VERSION, "owner": self.owner, "allowed": bool(self.allowed),
                "reason": self.reason}

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> AuditConsent:
        owner = str(record.get("owner", ""))
        problem = _version_problem(record, "an audit consent")
        if problem:
            return cls(owner, False, problem)
        return cls(owner, record.get("allowed") is True, str(record.get("reason", "")))


@dataclass(frozen=True)
class StageRequest:
    """The ``stage`` record of an audit: train stage ``len(order)`` of the chain ``order`` (owner
    names; this owner is the last) on the model the ``chain.*`` adapters rebuild, one per
    earlier stage. The stage is seeded ``spec.seed + len(order) − 1`` (as the fidelity study's)."""

    run_id: str
    order: tuple[str, ...]

    def to_record(self) -> dict[str, Any]:
        return {"wire_version": WIRE_VERSION, "run_id": self.run_id, "order": list(self.order)}

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> StageRequest:
        _check_version(record, "an audit stage request")
        order = record.get("order", [])
        if not isinstance(order, list) or len(order) < 2:
            raise WireError("an audit stage request names an order of at least two owners")
        return cls(str(record.get("run_id", "")), tuple(str(x) for x in order))



@dataclass(frozen=True)
class ReplyMeta:
    """The ``meta`` record of an owner's reply: who it is and what it claims about its adapter.

    ``error`` set: the owner could not train (its reason is recorded). ``skipped``: the
    coordinator already holds this owner's adapter (a resumed run).
    """

    owner: str
    num_examples: int = 0
    sha256: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    run_id: str = ""
    nonce: str = ""
    spec_sha256: str = ""
    signature: str = ""
    source: str = "trained"
    error: str = ""
    skipped: bool = False

    def to_record(self) -> dict[str, Any]:
        """Plain values for a ``ConfigRecord`` (``dropped`` as JSON text: records hold no maps)."""
        record: dict[str, object] = {"wire_version": WIRE_VERSION, "owner": self.owner}
        if self.error:
            return {**record, "error": self.error}
        if self.skipped:
            return {**record, "skipped": True}
        return {**record, "num_examples": int(self.num_examples), "sha256": self.sha256,
                "dropped": json.dumps(self.dropped, sort_keys=True), "run_id": self.run_id, "nonce": self.nonce,
                "spec_sha256": self.spec_sha256, "signature": self.signature, "source": self.source}

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> ReplyMeta:
        """The reply's meta; a reply of another wire version becomes an ``error`` with the reason."""
        owner = str(record.get("owner", ""))
        problem = _version_problem(record, "a reply")
        if problem:
            return cls(owner, error=problem)
        if record.get("error"):
            return cls(owner, error=str(record["error"]))
        if record.get("skipped"):
            return cls(owner, skipped=True)
        try:
            dropped = {str(k): int(v) for k, v in json.loads(str(record.get("dropped", "{}"))).items()}
            num_examples = int(str(record.get("num_examples", 0)))
        except (ValueError, TypeError, AttributeError) as exc:
            return cls(owner, error=f"malformed reply: {exc}")
        return cls(owner, num_examples, str(record.get("sha256", "")), dropped, str(record.get("run_id", "")),
                   str(record.get("nonce", "")), str(record.get("spec_sha256", "")),
                   str(record.get("signature", "")), "adapter" if record.get("source") == "adapter" else "trained")
