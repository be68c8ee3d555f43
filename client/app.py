"""Flower ClientApp of an owner: a thin layer over :mod:`client.owner`.

Message in: ``spec`` (ConfigRecord of :class:`~common.config.spec.TrainingSpec`), optionally
``roster`` (simulation only). Message out: ``adapter`` (ArrayRecord, float32 tensors),
``meta`` (owner, counts, digest, ``source``: ``trained`` or ``adapter``, or ``error``),
``metrics`` (MetricRecord).
"""

from __future__ import annotations

import json
import os

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.owner import node_hardware, resolve_identity, sign_submission, train_with_retries
from common.config.spec import TrainingSpec
from common.errors import FairPoolError

app = ClientApp()


def _reply(msg: Message, meta: dict, adapter: ArrayRecord | None = None, metrics: dict | None = None) -> Message:
    content = RecordDict({"meta": ConfigRecord(meta)})
    if adapter is not None:
        content["adapter"] = adapter
    if metrics:
        content["metrics"] = MetricRecord(metrics)
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train this owner's DPO adapter with the coordinator's spec (or read the adapter it already
    has: ``adapter-path``); reply with tensors only, signed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("FAIRPOOL_CLIENT_THREADS", "1")))
    roster = None
    if "roster" in msg.content:
        record = msg.content["roster"]
        roster = {k: list(record[k]) for k in ("names", "paths", "keys", "adapters", "adapter_examples")
                  if k in record}
    request = dict(msg.content["request"]) if "request" in msg.content else {}
    try:
        identity = resolve_identity(context.node_config, roster)
    except FairPoolError as exc:
        return _reply(msg, {"owner": "", "error": str(exc)})
    if identity.name in list(request.get("held", [])):
        return _reply(msg, {"owner": identity.name, "skipped": True})  # the coordinator holds our adapter
    try:
        spec = TrainingSpec.from_record(dict(msg.content["spec"]))
        requested = dict(msg.content["hardware"]) if "hardware" in msg.content else None
        hardware = node_hardware(context.node_config, requested)
        result, attempts = train_with_retries(spec, identity, hardware=hardware)
        run_id, nonce = str(request.get("run_id", "")), str(request.get("nonce", ""))
        signature = sign_submission(identity, run_id, nonce, result, spec)
    except FairPoolError as exc:
        return _reply(msg, {"owner": identity.name, "error": str(exc)})
    except Exception as exc:  # report, never crash the node: the coordinator records the reason
        return _reply(msg, {"owner": identity.name, "error": f"training failed: {type(exc).__name__}: {exc}"})
    adapter = ArrayRecord({name: Array(tensor) for name, tensor in result.tensors.items()})
    meta = {
        "owner": identity.name,
        "num_examples": result.num_examples,
        "sha256": result.sha256,
        "dropped": json.dumps(result.dropped, sort_keys=True),
        "run_id": run_id,
        "nonce": nonce,
        "spec_sha256": spec.digest(),
        "signature": signature,
        "source": identity.source,
    }
    return _reply(msg, meta, adapter, {**result.metrics, "attempts": float(attempts)})
