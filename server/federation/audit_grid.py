"""The audit's retrainer in a federation: each stage goes to its owner's node through the ``Grid``.

Flower has no owner-to-owner channel, so the stage model "travels" through the coordinator as
the adapters of the stages so far (``chain.0``, ``chain.1``, …): the next owner rebuilds the
model from them and trains its stage on its own data. The coordinator first asks every node
whether its owner consents (``query.audit_consent``), which also tells it which node plays
which owner; stages of one depth are sent together and train at once on their owners' nodes.
The plan and the comparison are :mod:`server.valuation.audit`'s; this is only the transport.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from common.config.job import ValuationJob
from common.wire.messages import (
    AUDIT_CONSENT_ACTION,
    AUDIT_STAGE_ACTION,
    AuditConsent,
    Records,
    StageRequest,
    chain_record,
)
from server.federation.collect import decode_reply, owner_nodes, replies, with_roster
from server.valuation.audit import StageOutcome, StageTask

CONSENT_TIMEOUT_S = 120.0
"""The longest wait for nodes' answers to the consent question (or the owners' timeout, if
shorter): answering trains nothing, so a node silent this long is offline, and the audit goes
on without its owner instead of holding the finished valuation for the whole owners' timeout."""


class GridRetrainer:
    """:class:`~server.valuation.audit.Retrainer` over a Flower ``Grid``."""

    def __init__(self, grid: Grid, job: ValuationJob, progress: Callable[..., None] = lambda *_a, **_k: None) -> None:
        self.grid, self.job, self.progress = grid, job, progress
        self.nodes: dict[str, int] = {}

    def consent(self, owners: Sequence[str]) -> dict[str, str]:
        waited = min(self.job.owner_timeout_s, CONSENT_TIMEOUT_S)
        node_ids = owner_nodes(self.grid, self.job, len(owners), waited)
        messages = [Message(content=with_roster(self.job, RecordDict()), dst_node_id=node_id,
                            message_type=f"{MessageType.QUERY}.{AUDIT_CONSENT_ACTION}") for node_id in node_ids]
        sent = dict(zip(self.grid.push_messages(messages), node_ids))
        answers: dict[str, AuditConsent] = {}
        for reply in replies(self.grid, sent, waited):
            if reply.has_error() or Records.CONSENT not in reply.content:
                self.progress("audit", f"a node could not answer the audit's question: "
                                       f"{reply.error if reply.has_error() else 'no consent record'}")
                continue
            answer = AuditConsent.from_record(dict(reply.content[Records.CONSENT]))
            if answer.owner in owners and answer.owner not in answers:
                answers[answer.owner] = answer
                self.nodes[answer.owner] = sent[reply.metadata.reply_to_message_id]
        declined = {name: a.reason or "did not consent" for name, a in answers.items() if not a.allowed}
        for name in owners:
            if name not in answers:
                declined[name] = f"no answer within {waited:.0f}s"
        return declined

    def train_stages(self, tasks: Sequence[StageTask]) -> dict[tuple[str, ...], StageOutcome]:
        messages = [self._stage_message(task) for task in tasks]
        sent = dict(zip(self.grid.push_messages(messages), tasks))
        outcomes: dict[tuple[str, ...], StageOutcome] = {}
        for reply in replies(self.grid, sent, self.job.owner_timeout_s):
            task = sent[reply.metadata.reply_to_message_id]
            sub = decode_reply(reply)
            if sub is None or sub.owner != task.owner:
                error = reply.error if reply.has_error() else f"the reply does not come from {task.owner}"
                outcomes[task.order] = StageOutcome(error=str(error))
            elif sub.error or sub.tensors is None:
                outcomes[task.order] = StageOutcome(error=sub.error or "no adapter in the reply")
            else:
                outcomes[task.order] = StageOutcome(sub.tensors, metrics=dict(sub.metrics))
                self.progress("audit", f"{' → '.join(task.order)}: stage {len(task.order)} trained by {task.owner}",
                              owner=task.owner)
        for task in tasks:
            outcomes.setdefault(task.order, StageOutcome(error=f"no reply within {self.job.owner_timeout_s:.0f}s"))
        return outcomes

    def _stage_message(self, task: StageTask) -> Message:
        content = RecordDict({
            Records.SPEC: ConfigRecord({**self.job.spec.to_record(), "run_id": self.job.run_id}),
            Records.STAGE: ConfigRecord(StageRequest(self.job.run_id, task.order).to_record()),
            Records.HARDWARE: ConfigRecord(self.job.hardware.to_record()),
        })
        for index, tensors in enumerate(task.chain):
            content[chain_record(index)] = ArrayRecord({name: Array(value) for name, value in tensors.items()})
        return Message(content=with_roster(self.job, content), dst_node_id=self.nodes[task.owner],
                       message_type=f"{MessageType.TRAIN}.{AUDIT_STAGE_ACTION}")
