"""What an owner does when the coordinator asks it to train, without Flower in the way.

An owner's identity and data location come from its own SuperNode's configuration
(``--node-config 'owner-name="acme" data-path="/data/prefs.jsonl"'``) in a real deployment.
In the Simulation Engine every simulated SuperNode is one owner of the job's roster, chosen by
its ``partition-id``. Either way the examples are read here and never leave this process:
the reply holds adapter tensors and counts only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from client.trainer import AdapterResult, train_adapter
from common.data import load_preferences
from common.errors import FairPoolError
from common.spec import TrainingSpec

NODE_OWNER_KEY = "owner-name"
NODE_DATA_KEY = "data-path"


@dataclass(frozen=True)
class OwnerIdentity:
    name: str
    data_path: str


def resolve_identity(node_config: Mapping[str, object], roster: Mapping[str, Sequence[str]] | None) -> OwnerIdentity:
    """Who this node is: its own node config first, else its slot in a simulated roster."""
    if NODE_OWNER_KEY in node_config:
        if NODE_DATA_KEY not in node_config:
            raise FairPoolError(f"node config sets {NODE_OWNER_KEY} but not {NODE_DATA_KEY}")
        return OwnerIdentity(str(node_config[NODE_OWNER_KEY]), str(node_config[NODE_DATA_KEY]))
    if roster is not None and "partition-id" in node_config:
        index = int(node_config["partition-id"])  # type: ignore[arg-type]
        names, paths = list(roster["names"]), list(roster["paths"])
        if not 0 <= index < len(names):
            raise FairPoolError(f"simulated node {index} has no owner in a roster of {len(names)}")
        return OwnerIdentity(names[index], paths[index])
    raise FairPoolError(
        f"this SuperNode has no owner identity: start it with "
        f"--node-config '{NODE_OWNER_KEY}=\"NAME\" {NODE_DATA_KEY}=\"PATH\"'"
    )


def train_owner(spec: TrainingSpec, identity: OwnerIdentity,
                progress: Callable[[str], None] = lambda _m: None) -> AdapterResult:
    """Load and validate the owner's own data, then train its adapter."""
    examples, report = load_preferences(identity.data_path)
    result = train_adapter(spec, examples, progress=progress)
    result.dropped.update({reason: count for reason, count in report.dropped.items() if count})
    return result
