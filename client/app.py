"""Flower ClientApp of an owner: a thin layer over :mod:`client.owner` and :mod:`client.audit`.

The message's records and keys are :mod:`common.wire.messages`: in, ``spec``, ``request``,
``hardware`` and (simulation only) ``roster``; out, ``meta`` (:class:`ReplyMeta`), ``adapter``
(ArrayRecord, float32 tensors) and ``metrics`` (MetricRecord). The audit adds two actions:
``query.audit_consent`` (out: ``consent``) and ``train.audit_stage`` (in: ``stage`` and the
chain's adapters ``chain.0``, ``chain.1``, …; out: as a training reply).
"""

from __future__ import annotations

import os

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.owner import node_hardware, resolve_identity, sign_submission, train_with_retries
from common.config.spec import TrainingSpec
from common.errors import FairPoolError
from common.wire.messages import (
    AUDIT_CONSENT_ACTION,
    AUDIT_STAGE_ACTION,
    Records,
    ReplyMeta,
    Roster,
    StageRequest,
    TrainingRequest,
    WireError,
    chain_record,
)

app = ClientApp()


def _reply(msg: Message, meta: ReplyMeta, adapter: ArrayRecord | None = None, metrics: dict | None = None) -> Message:
    content = RecordDict({Records.META: ConfigRecord(meta.to_record())})
    if adapter is not None:
        content[Records.ADAPTER] = adapter
    if metrics:
        content[Records.METRICS] = MetricRecord(metrics)
    return Message(content=content, reply_to=msg)


def _live_progress(roster: Roster | None, owner: str):
    """Training steps appended to the coordinator's progress file, when the roster names one
    (simulated owners share its machine); a deployed owner's progress stays its own."""
    if roster is None or not roster.progress:
        return None
    from common.storage.progress import append_event

    def report(event: dict) -> None:
        try:
            append_event(roster.progress, {"stage": "owner", "owner": owner, **event,
                                           "message": f"{owner}: {event['message']}"})
        except OSError:  # progress is a courtesy: never fail a training for it
            pass

    return report


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train this owner's DPO adapter with the coordinator's spec (or read the adapter it already
    has: ``adapter-path``); reply with tensors only, signed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("FAIRPOOL_CLIENT_THREADS", "1")))
    content = msg.content
    try:
        identity, listed = _identity(msg, context)
        request = TrainingRequest.from_record(dict(content[Records.REQUEST]) if Records.REQUEST in content else None)
    except (FairPoolError, WireError) as exc:
        return _reply(msg, ReplyMeta("", error=str(exc)))
    if identity.name in request.held:
        return _reply(msg, ReplyMeta(identity.name, skipped=True))  # the coordinator holds our adapter
    try:
        spec = TrainingSpec.from_record(dict(content[Records.SPEC]))
        requested = dict(content[Records.HARDWARE]) if Records.HARDWARE in content else None
        hardware = node_hardware(context.node_config, requested)
        result, attempts = train_with_retries(spec, identity, hardware=hardware,
                                              on_step=_live_progress(listed, identity.name))
        signature = sign_submission(identity, request.run_id, request.nonce, result, spec)
    except FairPoolError as exc:
        return _reply(msg, ReplyMeta(identity.name, error=str(exc)))
    except Exception as exc:  # report, never crash the node: the coordinator records the reason
        return _reply(msg, ReplyMeta(identity.name, error=f"training failed: {type(exc).__name__}: {exc}"))
    adapter = ArrayRecord({name: Array(tensor) for name, tensor in result.tensors.items()})
    meta = ReplyMeta(identity.name, num_examples=result.num_examples, sha256=result.sha256,
                     dropped=dict(result.dropped), run_id=request.run_id, nonce=request.nonce,
                     spec_sha256=spec.digest(), signature=signature, source=identity.source)
    return _reply(msg, meta, adapter, {**result.metrics, "attempts": float(attempts)})


def _identity(msg: Message, context: Context):
    """The owner this node is, and the simulated roster when the message carries one."""
    listed = Roster.from_record(dict(msg.content[Records.ROSTER])) if Records.ROSTER in msg.content else None
    return resolve_identity(context.node_config, listed.to_record() if listed is not None else None), listed


@app.query(AUDIT_CONSENT_ACTION)
def audit_consent_query(msg: Message, context: Context) -> Message:
    """Answer whether this owner takes part in the audit (:func:`client.audit.audit_consent`)."""
    from client.audit import audit_consent
    from common.wire.messages import AuditConsent

    try:
        identity, _listed = _identity(msg, context)
        consent = audit_consent(identity)
    except (FairPoolError, WireError) as exc:
        consent = AuditConsent("", False, str(exc))
    return Message(content=RecordDict({Records.CONSENT: ConfigRecord(consent.to_record())}), reply_to=msg)


@app.train(AUDIT_STAGE_ACTION)
def audit_stage(msg: Message, context: Context) -> Message:
    """Train this owner's stage of an audited chain on its own data; reply with its adapter."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from client.audit import train_stage

    torch.set_num_threads(int(os.environ.get("FAIRPOOL_CLIENT_THREADS", "1")))
    content = msg.content
    try:
        identity, listed = _identity(msg, context)
        request = StageRequest.from_record(dict(content[Records.STAGE]))
        spec = TrainingSpec.from_record(dict(content[Records.SPEC]))
        chain = [{name: array.numpy() for name, array in content.array_records[chain_record(i)].items()}
                 for i in range(len(request.order) - 1)]
        requested = dict(content[Records.HARDWARE]) if Records.HARDWARE in content else None
        result = train_stage(spec, identity, request, chain, node_hardware(context.node_config, requested),
                             on_step=_live_progress(listed, identity.name))
    except (FairPoolError, WireError, KeyError) as exc:
        return _reply(msg, ReplyMeta(_name_of(msg, context), error=str(exc)))
    except Exception as exc:  # report, never crash the node: the coordinator skips the coalition with the reason
        return _reply(msg, ReplyMeta(_name_of(msg, context), error=f"audit stage failed: {type(exc).__name__}: {exc}"))
    adapter = ArrayRecord({name: Array(tensor) for name, tensor in result.tensors.items()})
    meta = ReplyMeta(identity.name, num_examples=result.num_examples, sha256=result.sha256,
                     dropped=dict(result.dropped), run_id=request.run_id, spec_sha256=spec.digest())
    return _reply(msg, meta, adapter, result.metrics)


def _name_of(msg: Message, context: Context) -> str:
    try:
        return _identity(msg, context)[0].name
    except (FairPoolError, WireError):
        return ""
