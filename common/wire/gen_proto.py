"""Regenerate the committed gRPC/protobuf code from ``common/wire/publication.proto``.

    python -m common.wire.gen_proto            # rewrites common/wire/publication_pb2*.py(i)
    python -m common.wire.gen_proto --out DIR  # writes DIR/common/wire/... (the freshness test uses this)

The generated modules are committed so a deployment needs only ``grpcio`` and ``protobuf`` at
run time; ``grpcio-tools`` (the dev extra) is needed only here. protoc runs with the repository
root as its include path and the file named ``common/wire/publication.proto``, so the generated
``_grpc`` module imports ``from common.wire import publication_pb2`` — importable from the
repository root without any post-editing of the generated text, which keeps regeneration
byte-for-byte deterministic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = "common/wire/publication.proto"
GENERATED = ("common/wire/publication_pb2.py", "common/wire/publication_pb2.pyi", "common/wire/publication_pb2_grpc.py")


def generate(out_root: Path = ROOT) -> list[Path]:
    """Run protoc on :data:`PROTO` into ``out_root`` (mirroring the repository layout)."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # a dev tool: say how to get it rather than a bare traceback
        raise SystemExit("grpcio-tools is missing: pip install -c constraints.txt -e '.[dev]'") from exc
    (out_root / "common" / "wire").mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")  # google/protobuf/*.proto
    code = protoc.main(["grpc_tools.protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out_root}",
                        f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", str(ROOT / PROTO)])
    if code != 0:
        raise SystemExit(f"protoc failed on {PROTO} (exit {code})")
    return [out_root / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write common/... under (default: repo)")
    for path in generate(parser.parse_args(argv).out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
