"""What an owner does for the coordinator's audit, without Flower in the way.

The audit retrains a few coalitions by sequential DPO to check the arithmetic (server/valuation/
audit.py). An owner's part is one stage of a chain: rebuild the model of the stages before it
from their adapters (merged into π₀ in order), DPO-train a fresh LoRA adapter on it with its own
data — that model is the stage's reference, as in Algorithm 1 — and send back the adapter. Its
examples never leave it; what it receives is a model trained on other owners' data, which is
why it must consent first (``allow-audit = true`` in its node config).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from client.owner import NODE_AUDIT_KEY, OwnerIdentity
from client.trainer import AdapterResult, StepReport, check_base_identity, fit_lora, prepare_training
from common.config.hardware import Hardware
from common.config.spec import TrainingSpec
from common.data import load_preferences
from common.errors import FairPoolError
from common.model.base import load_spec_model
from common.model.lora import adapter_tensors, merge_chain
from common.wire.messages import AuditConsent, StageRequest


def audit_consent(identity: OwnerIdentity) -> AuditConsent:
    """Whether this owner takes part in the audit, and why not."""
    if not identity.allow_audit:
        return AuditConsent(identity.name, False, "a simulated owner named in `refuse_audit`" if identity.simulated
                            else f"its node config does not set {NODE_AUDIT_KEY} = true")
    if identity.adapter_path:
        return AuditConsent(identity.name, False, "valued by an existing adapter: it has no data here to train "
                                                  "a stage on")
    return AuditConsent(identity.name, True)


def stage_seed(spec: TrainingSpec, stage: int) -> int:
    """Stage ``stage`` of a sequential DPO chain (1-based) is seeded ``seed + stage − 1``: the
    one rule of the audit and of the fidelity study (server/studies/sequential.py), so the audit
    retrains exactly the study's models, and stage 1 is the owner's own adapter's seed."""
    return spec.seed + stage - 1


def train_stage(spec: TrainingSpec, identity: OwnerIdentity, request: StageRequest,
                chain: Sequence[Mapping[str, np.ndarray]], hardware: Hardware | None = None,
                on_step: StepReport | None = None) -> AdapterResult:
    """Train this owner's stage of ``request.order`` on the model ``chain`` rebuilds; never
    without consent, whatever the coordinator asks."""
    consent = audit_consent(identity)
    if not consent.allowed:
        raise FairPoolError(f"{identity.name} takes no part in the audit: {consent.reason}")
    if request.order[-1] != identity.name:
        raise FairPoolError(f"asked to train the stage of {request.order[-1]!r}, but this owner is {identity.name!r}")
    if len(chain) != len(request.order) - 1:
        raise FairPoolError(f"an audit stage {len(request.order)} needs {len(request.order) - 1} earlier stage "
                            f"adapter(s), got {len(chain)}")
    prepare_training()
    check_base_identity(spec)
    hardware = hardware or Hardware()
    examples, report = load_preferences(identity.data_path)
    model, tokenizer = load_spec_model(spec, hardware)
    model = merge_chain(model, spec, chain)
    trainer, metrics, kept, dropped = fit_lora(replace(spec, seed=stage_seed(spec, len(request.order))), model, tokenizer,
                                               examples, resolved=hardware.resolve(), on_step=on_step)
    dropped.update({reason: count for reason, count in report.dropped.items() if count})
    return AdapterResult(adapter_tensors(trainer.model), len(kept), dropped, metrics)
