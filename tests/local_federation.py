"""An in-process federation for fault-injection tests: the real ClientApp behind Flower's Grid calls.

``LocalGrid`` implements the three ``Grid`` methods the coordinator uses (``get_node_ids``,
``push_messages``, ``pull_messages``) by handing each message to the real ``client.app``
ClientApp with that node's ``node_config``, as a SuperNode would. An ``intercept`` hook sits
where the network would be: it can drop a reply (a node that never answers), alter it (a
corrupted adapter), or substitute another (a replay). Everything on both ends is the product's
own code; only the transport is replaced, so faults are exact and tests take seconds.

Run as a script (``python -m tests.local_federation SCENARIO.json``) it runs one job in a
fresh process, so a test can kill the coordinator with a failpoint and run it again.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from common.config.job import OwnerEntry, ValuationJob
from common.config.spec import TrainingSpec
from common.trust.signing import generate_private_key, load_private_key, public_key_text, save_keypair

Intercept = Callable[[int, Message], Message | None]


class LocalGrid:
    """Messages go straight to the ClientApp; replies wait until pulled."""

    def __init__(self, node_configs: Sequence[Mapping[str, object]], intercept: Intercept | None = None) -> None:
        self.nodes = {i + 1: dict(cfg) for i, cfg in enumerate(node_configs)}
        self.intercept = intercept
        self.replies: list[Message] = []
        self.trainings = 0
        """Replies that carried a freshly trained adapter."""

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def push_messages(self, messages: Sequence[Message]) -> list[str]:
        from client.app import app

        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
        ids = []
        for message in messages:
            message.metadata._message_id = uuid.uuid4().hex  # what the SuperLink assigns on push
            node = message.metadata.dst_node_id
            context = Context(run_id=1, node_id=node, node_config=self.nodes[node], state=RecordDict(), run_config={})
            reply = app(message, context)
            if "adapter" in reply.content:
                self.trainings += 1
            if self.intercept is not None:
                reply = self.intercept(node, reply)
            if reply is not None:
                self.replies.append(reply)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Sequence[str]) -> list[Message]:
        wanted = set(message_ids)
        ready = [r for r in self.replies if r.metadata.reply_to_message_id in wanted]
        self.replies = [r for r in self.replies if r not in ready]
        return ready


@dataclass
class Federation:
    """A job whose owners run as nodes of a :class:`LocalGrid` with their own keys."""

    job: ValuationJob
    node_configs: list[dict]


def make_federation(tmp: Path, spec: TrainingSpec, owners: Mapping[str, Path], eval_path: Path, *,
                    run_id: str = "run-1", out: Path | None = None, utilities: Sequence[str] = ("preference",),
                    intruders: Mapping[str, Path] = (), **job_options) -> Federation:
    """Keys for coordinator and every owner under ``tmp/keys`` (reused if present) and the job."""
    from common.config.games import ValuationSettings
    from common.trust.sealing import generate_storage_key

    keys = tmp / "keys"

    def keypair(name: str) -> Path:
        path = keys / f"{name}.key"
        if not path.exists():
            save_keypair(generate_private_key(), keys, name)
        return path

    entries, configs = [], []
    for name, data in owners.items():
        key = keypair(name)
        entries.append(OwnerEntry(name, public_key=public_key_text(load_private_key(key).public_key())))
        configs.append({"owner-name": name, "data-path": str(data), "signing-key": str(key)})
    for name, data in dict(intruders).items():  # nodes whose owner is on no allowlist
        configs.append({"owner-name": name, "data-path": str(data), "signing-key": str(keypair(name))})
    storage = keys / "storage.key"
    if not storage.exists():
        generate_storage_key(storage)
    job = ValuationJob(run_id=run_id, owners=tuple(entries), eval_path=str(eval_path),
                       out_dir=str(out or tmp / "out"), spec=spec, simulated=False,
                       coordinator_key=str(keypair("coordinator")), storage_key=str(storage),
                       valuation=ValuationSettings(utilities=tuple(utilities)), **job_options)
    return Federation(job, configs)


def run(federation: Federation, intercept: Intercept | None = None) -> tuple[dict | None, LocalGrid]:
    """Run the job over a fresh :class:`LocalGrid`; returns the report (None on failure) and the grid
    (``grid.trainings`` counts adapters sent back: owners' and audit stages')."""
    from server.federation.audit_grid import GridRetrainer
    from server.federation.collect import collect_adapters
    from server.federation.run import run_job

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0  # what a ServerApp process has
    grid = LocalGrid(federation.node_configs, intercept)
    job = federation.job
    report = run_job(job, lambda admission, wanted, progress: collect_adapters(grid, job, admission, wanted, progress),
                     auditors=lambda progress: GridRetrainer(grid, job, progress))  # as the ServerApp does
    return report, grid


def simulated_nodes(job: ValuationJob) -> list[dict]:
    """The node configs Flower's Simulation Engine gives a simulated job's SuperNodes: one
    ``partition-id`` per owner of the roster (as ``write_flower_home`` sizes the federation)."""
    return [{"partition-id": i} for i in range(len(job.owners))]


def run_simulated_in_process(job: ValuationJob) -> dict:
    """A simulated job (``fairpool value``'s ``job.json``) run over a :class:`LocalGrid` in this
    process: the same ServerApp and ClientApp code as ``flwr run``, without Flower's processes.
    An independent reference for what a Flower run gives, at a fraction of its start-up cost."""
    from server.federation.run import ERROR_FILE

    report, _ = run(Federation(job, simulated_nodes(job)))
    assert report is not None, Path(job.out_dir, ERROR_FILE).read_text()
    return report


def replace_reply(reply: Message, meta: Mapping[str, object] | None = None,
                  tensors: Mapping[str, object] | None = None) -> Message:
    """A copy of ``reply`` with some meta fields and/or adapter tensors replaced (what a network could do)."""
    from flwr.app import Array, ArrayRecord

    content = RecordDict({"meta": ConfigRecord({**dict(reply.content["meta"]), **dict(meta or {})})})
    if tensors is not None:
        content["adapter"] = ArrayRecord({k: Array(v) for k, v in tensors.items()})
    elif "adapter" in reply.content:
        content["adapter"] = reply.content["adapter"]
    if "metrics" in reply.content:
        content["metrics"] = reply.content["metrics"]
    return Message(content=content, reply_to=_original(reply))


def _original(reply: Message) -> Message:
    """A stand-in for the request ``reply`` answers (only its ids matter to ``reply_to``)."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    request = Message(content=RecordDict(), dst_node_id=reply.metadata.src_node_id or 1, message_type="train")
    request.metadata._message_id = reply.metadata.reply_to_message_id
    return request


def main(argv: Sequence[str]) -> int:
    """Run the scenario file's job once; write ``{"ok", "trainings"}`` to its ``result`` path."""
    scenario = json.loads(Path(argv[0]).read_text())
    federation = Federation(ValuationJob.from_json(json.dumps(scenario["job"])), scenario["node_configs"])
    report, grid = run(federation)
    Path(scenario["result"]).write_text(json.dumps({"ok": report is not None, "trainings": grid.trainings}))
    return 0 if report is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
