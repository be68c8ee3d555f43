"""Everything ``deploy/docker-compose.yml`` mounts that is not in the repository.

    python -m deploy.prepare_compose [--root deploy] [--seed 0] [--force]

- ``credentials/`` by :mod:`deploy.make_credentials`: the CA, the SuperLink certificate for the
  compose service name ``superlink`` (plus ``localhost``/``127.0.0.1``, which the SuperLink's own
  SuperExec uses), and the key pairs of ``owner-a``, ``owner-b``, ``owner-c``; their public keys
  are also copied to ``credentials/registry/{supernode,signing}/OWNER.pub``: the folders of keys
  the coordinator received (``register`` registers the first, the job lists the second);
- ``data/owner-X/prefs.jsonl``: three owners of the embedded market (``clean``, ``noisy``,
  ``flipped``), one file per owner directory, so each SuperNode mounts only its own data;
- ``data/coordinator/eval.jsonl``: the held-out pairs, mounted only by the coordinator's side;
- ``out/``: where the ServerApp writes the job's report.

These paths are git-ignored by nature (keys, data, results) and are made per deployment.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from common.embedded.market import default_profiles, make_market
from common.errors import FairPoolError
from deploy.make_credentials import Layout, Request, make_credentials

DEPLOY_DIR = Path(__file__).resolve().parent
SUPERLINK_HOST = "superlink"
COMPOSE_OWNERS = {"owner-a": "clean", "owner-b": "noisy", "owner-c": "flipped"}
"""Compose owner name → the embedded-market owner whose data it holds."""
EXIT_USER_ERROR = 2


def prepare(root: Path, seed: int = 0, scale: int = 320, force: bool = False) -> list[Path]:
    """Write credentials, per-owner data, evaluation data and the output directory under ``root``."""
    credentials = Layout(root / "credentials")
    written = make_credentials(Request(out=credentials.root, hosts=(SUPERLINK_HOST,),
                                       owners=tuple(COMPOSE_OWNERS), force=force))
    registry = credentials.root / "registry"  # what the coordinator received: public keys only
    for kind, public in (("supernode", credentials.supernode_pub), ("signing", credentials.signing_pub)):
        (registry / kind).mkdir(parents=True, exist_ok=True)
        for owner in COMPOSE_OWNERS:
            shutil.copyfile(public(owner), registry / kind / f"{owner}.pub")
            written.append(registry / kind / f"{owner}.pub")
    market = make_market(root / "data" / "market", seed=seed, profiles=default_profiles(scale))
    for owner, source in COMPOSE_OWNERS.items():
        target = root / "data" / owner / "prefs.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(market.owners[source], target)
        written.append(target)
    evaluation = root / "data" / "coordinator" / "eval.jsonl"
    evaluation.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(market.eval_path, evaluation)
    shutil.rmtree(market.root)  # one copy per party is the point: no directory holds everyone's data
    (root / "out").mkdir(exist_ok=True)
    return [*written, evaluation, root / "out"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="prepare_compose", description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=DEPLOY_DIR, help="directory of docker-compose.yml (default deploy/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=320, help="examples of each large owner (default 320)")
    p.add_argument("--force", action="store_true", help="replace existing credentials")
    args = p.parse_args(argv)
    try:
        written = prepare(args.root.resolve(), args.seed, args.scale, args.force)
    except FairPoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print("\n".join(str(path) for path in written))
    print(f"\nnext: docker compose -f {args.root / 'docker-compose.yml'} up --build --exit-code-from coordinator")
    return 0


if __name__ == "__main__":
    sys.exit(main())
