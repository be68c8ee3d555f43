"""Gathering every owner's adapter individually through a Flower ``Grid`` (no averaging).

Kept apart from ``app.py`` so the waiting, timeout, nonce and admission rules read as plain
logic; the ``Grid`` is the only Flower object it touches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from common.config.job import ValuationJob
from common.errors import FairPoolError
from common.storage.progress import PROGRESS_FILE
from common.trust.signing import new_nonce
from common.wire.messages import Records, ReplyMeta, Roster, TrainingRequest
from server.federation.admission import Admission
from server.valuation.pipeline import Submission, submission_from_meta


def wait_for_nodes(grid: Grid, count: int, timeout_s: float, poll_s: float = 0.5,
                   settle_s: float | None = None) -> list[int]:
    """Node ids once ``count`` SuperNodes have joined (the list is empty right after start).

    ``settle_s`` (a simulation, whose SuperNodes all start at once): stop waiting as soon as
    the set of nodes has not changed for that long, even if fewer than ``count`` joined — more
    will never come, and the caller says so at once instead of after the owners' timeout.
    """
    deadline = time.monotonic() + timeout_s
    seen: list[int] = []
    since = time.monotonic()
    while True:
        ids = sorted(grid.get_node_ids())
        if ids != seen:
            seen, since = ids, time.monotonic()
        settled = settle_s is not None and ids and time.monotonic() - since >= settle_s
        if len(ids) >= count or settled or time.monotonic() > deadline:
            return ids
        time.sleep(poll_s)


def replies(grid: Grid, message_ids: Iterable[str], timeout_s: float, poll_s: float = 0.5) -> Iterator[Message]:
    """The replies to ``message_ids`` as they arrive, until all came or ``timeout_s`` passed
    (the caller tells the missing ones by the ids it did not see)."""
    pending = set(message_ids)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            pending.discard(reply.metadata.reply_to_message_id)
            yield reply
        if pending:
            time.sleep(poll_s)


SIMULATION_SETTLE_S = 5.0
"""How long a simulation's node set must stay the same before fewer nodes than owners is an error."""


def owner_nodes(grid: Grid, job: ValuationJob, wanted: int, timeout_s: float | None = None) -> list[int]:
    """The node ids to ask, once ``wanted`` owners' nodes have joined (or ``timeout_s``, by
    default the owners' timeout, passed)."""
    timeout_s = job.owner_timeout_s if timeout_s is None else timeout_s
    if job.simulated:  # partition i plays roster owner i: every owner needs its own SuperNode
        node_ids = wait_for_nodes(grid, len(job.owners), timeout_s, settle_s=SIMULATION_SETTLE_S)
        if len(node_ids) < len(job.owners):
            raise FairPoolError(f"the simulation has {len(node_ids)} SuperNode(s) for {len(job.owners)} owners: it "
                                f"needs one per owner (options.num-supernodes = {len(job.owners)} in the local "
                                "connection of $FLWR_HOME/config.toml)")
        return node_ids
    return wait_for_nodes(grid, wanted, timeout_s)


def training_message(job: ValuationJob, node_id: int, nonce: str, held: Sequence[str]) -> Message:
    """One node's training request: the spec, this run's id, a fresh nonce, the owners whose
    adapters the coordinator already holds (they need not train again), and the roster when
    owners are simulated."""
    content = RecordDict({
        Records.SPEC: ConfigRecord({**job.spec.to_record(), "run_id": job.run_id}),
        Records.REQUEST: ConfigRecord(TrainingRequest(job.run_id, nonce, tuple(held)).to_record()),
        Records.HARDWARE: ConfigRecord(job.hardware.to_record()),
    })
    with_roster(job, content)
    return Message(content=content, dst_node_id=node_id, message_type=MessageType.TRAIN)


def with_roster(job: ValuationJob, content: RecordDict) -> RecordDict:
    """``content`` with the job's roster added when owners are simulated (each simulated node
    learns from it which owner it plays); a deployed owner knows itself from its node config."""
    if job.simulated:
        roster = Roster(tuple(o.name for o in job.owners), tuple(o.data for o in job.owners),
                        tuple(o.signing_key for o in job.owners), tuple(o.adapter for o in job.owners),
                        tuple(int(o.adapter_examples) for o in job.owners),
                        progress=str(Path(job.out_dir) / PROGRESS_FILE),
                        allow_audit=tuple(o.allow_audit for o in job.owners))
        content[Records.ROSTER] = ConfigRecord(roster.to_record())
    return content


def decode_reply(reply: Message) -> Submission | None:
    """A reply as a :class:`Submission`; ``None`` when it names no owner at all."""
    if reply.has_error():
        return None
    content = reply.content
    meta = ReplyMeta.from_record(dict(content[Records.META]) if Records.META in content else {})
    if not meta.owner:
        return None
    tensors = None
    if Records.ADAPTER in content:
        tensors = {name: array.numpy() for name, array in content.array_records[Records.ADAPTER].items()}
    metrics = dict(content[Records.METRICS]) if Records.METRICS in content else {}
    return submission_from_meta(meta, tensors, metrics)


def collect_adapters(grid: Grid, job: ValuationJob, admission: Admission, wanted: Sequence[str],
                     progress: Callable[..., None]) -> dict[str, str]:
    """Ask every node for the ``wanted`` owners' adapters and admit replies as they arrive.

    Each request carries a fresh nonce (recorded in the ledger before it is sent); a reply is
    checked against the nonce of the request it answers. Returns ``{owner: reason}`` for the
    wanted owners that were not accepted (timeouts included); accepted ones are in the ledger.
    """
    expected = set(wanted)
    progress("wait", f"waiting for {len(expected)} owner node(s) to join")
    node_ids = owner_nodes(grid, job, len(expected))
    messages, nonces = [], []
    for node_id in node_ids:
        nonce = new_nonce()
        admission.ledger.issue_nonce(job.run_id, nonce)
        messages.append(training_message(job, node_id, nonce, sorted(set(job.owner_names) - expected)))
        nonces.append(nonce)
    progress("train", f"sent training spec to {len(node_ids)} node(s)", done=0, total=len(expected))
    issued = dict(zip(grid.push_messages(messages), nonces))
    accepted: set[str] = set()
    reasons: dict[str, str] = {}
    for reply in replies(grid, issued, job.owner_timeout_s):
        message_id = reply.metadata.reply_to_message_id
        sub = decode_reply(reply)
        if sub is None:
            progress("train", f"a node replied with an error: {reply.error if reply.has_error() else 'no owner'}")
            continue
        if sub.skipped:
            continue
        if sub.owner in accepted:
            progress("train", f"ignored a second reply claiming owner {sub.owner!r}")
            continue
        reason = admission.admit(sub, issued.get(message_id))
        if reason is None:
            accepted.add(sub.owner)
            reasons.pop(sub.owner, None)
            progress("train", f"{sub.owner}: adapter accepted ({sub.num_examples} examples)", owner=sub.owner,
                     done=len(accepted), total=len(expected))
        else:
            if sub.owner in expected:
                reasons[sub.owner] = reason
            progress("train", f"{sub.owner}: refused: {reason}", owner=sub.owner)
    for name in sorted(expected - accepted - set(reasons)):
        reasons[name] = f"no reply within {job.owner_timeout_s:.0f}s"
        admission.ledger.record_submission(job.run_id, name, status="missing", reason=reasons[name], meta={})
    return reasons
