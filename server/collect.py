"""Gathering every owner's adapter individually through a Flower ``Grid`` (no averaging).

Kept apart from ``app.py`` so the waiting, timeout and de-duplication rules read as plain
logic; the ``Grid`` is the only Flower object it touches.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from common.job import ValuationJob
from server.coordinator import Submission, submission_from_meta


def wait_for_nodes(grid: Grid, count: int, timeout_s: float, poll_s: float = 0.5) -> list[int]:
    """Node ids once ``count`` SuperNodes have joined (the list is empty right after start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) >= count or time.monotonic() > deadline:
            return ids
        time.sleep(poll_s)


def training_messages(job: ValuationJob, node_ids: list[int]) -> list[Message]:
    """One training request per node: the spec, plus the roster when owners are simulated."""
    messages = []
    for node_id in node_ids:
        content = RecordDict({"spec": ConfigRecord({**job.spec.to_record(), "run_id": job.run_id})})
        if job.simulated:
            content["roster"] = ConfigRecord({"names": [o.name for o in job.owners],
                                              "paths": [o.data for o in job.owners]})
        messages.append(Message(content=content, dst_node_id=node_id, message_type=MessageType.TRAIN))
    return messages


def decode_reply(reply: Message) -> Submission | None:
    """A reply as a :class:`Submission`; ``None`` when it names no owner at all."""
    if reply.has_error():
        return None
    content = reply.content
    meta = dict(content["meta"]) if "meta" in content else {}
    owner = str(meta.get("owner", ""))
    if not owner:
        return None
    tensors = None
    if "adapter" in content:
        tensors = {name: array.numpy() for name, array in content["adapter"].items()}
    metrics = dict(content["metrics"]) if "metrics" in content else {}
    return submission_from_meta(owner, meta, tensors, metrics)


def collect_adapters(grid: Grid, job: ValuationJob, progress: Callable[..., None]) -> list[Submission]:
    """Send the spec to every owner's node and gather replies as they arrive, keyed by owner.

    Replies from names outside the job, and second replies under a name already received,
    are ignored and logged: a node cannot impersonate or double-count an owner.
    """
    expected = set(job.owner_names)
    progress("wait", f"waiting for {len(expected)} owner node(s) to join")
    node_ids = wait_for_nodes(grid, len(expected), job.owner_timeout_s)
    progress("train", f"sent training spec to {len(node_ids)} node(s)", done=0, total=len(expected))
    pending = set(grid.push_messages(training_messages(job, node_ids)))
    received: dict[str, Submission] = {}
    deadline = time.monotonic() + job.owner_timeout_s
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            pending.discard(reply.metadata.reply_to_message_id)
            sub = decode_reply(reply)
            if sub is None:
                progress("train", f"a node replied with an error: {reply.error if reply.has_error() else 'no owner'}")
                continue
            if sub.owner not in expected or sub.owner in received:
                progress("train", f"ignored a reply claiming owner {sub.owner!r}")
                continue
            received[sub.owner] = sub
            status = f"failed: {sub.error}" if sub.error else f"adapter received ({sub.num_examples} examples)"
            progress("train", f"{sub.owner}: {status}", owner=sub.owner, done=len(received), total=len(expected))
        if pending:
            time.sleep(0.5)
    for name in sorted(expected - set(received)):
        received[name] = Submission(name, error=f"no reply within {job.owner_timeout_s:.0f}s")
    return [received[name] for name in job.owner_names]
