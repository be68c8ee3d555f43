"""The layout is the design (issue 13): each folder has one job and imports point one way only.

Read from the source with ``ast`` (no import needed), so a new upward import fails here with
the file, the line and the rule it breaks. docs/architecture.md draws the same layers.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, ...], ...] = (
    ("common.errors", "common.status"),
    ("common.storage",),
    ("common.trust",),
    ("common.valuation",),
    ("common.data",),
    ("common.config",),
    ("common.model",),
    ("common.wire",),
    ("common.embedded",),
    ("client",),
    ("server.report",),
    ("server.valuation",),
    ("server.federation",),
    ("server.publication",),
    ("server.studies",),
    ("server.cli",),
    ("fairpool",),
)
"""Bottom to top: a module may import its own layer or one below it, never one above."""

OPTIONAL = ("common.embedded",)
"""The embedded toy world is optional: below the CLI it may only be imported inside a function."""

HEAVY = ("torch", "transformers", "peft", "trl", "flwr", "datasets", "ray", "grpc")


def _layer(module: str) -> int:
    if module in ("common", "server"):
        return -1  # the top packages' (empty) __init__ modules
    for rank, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return rank
    raise AssertionError(f"{module} belongs to no layer of tests/test_layout.py: add its package to LAYERS")


def _modules() -> list[tuple[str, Path]]:
    found = []
    for top in ("common", "server", "client", "fairpool"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every absolute import in ``path``."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    top_level |= {id(n) for node in tree.body if isinstance(node, (ast.If, ast.Try)) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [(n, node.lineno, id(node) in top_level) for n in names[:1]]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top_level) for a in node.names]
    return found


MODULES = _modules()


def test_every_module_has_a_layer():
    for module, _path in MODULES:
        _layer(module)


@pytest.mark.parametrize("module, path", MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_downward(module, path):
    own = _layer(module)
    problems = []
    for imported, line, top_level in _imports(path):
        if imported.split(".")[0] not in ("common", "server", "client"):
            continue
        if imported in ("common", "server", "client"):
            continue
        rank = _layer(imported)
        where = f"{path.relative_to(ROOT)}:{line}: {module} imports {imported}"
        if rank > own:
            problems.append(f"{where}, a layer above it")
        elif top_level and imported.startswith(OPTIONAL) and not module.startswith(OPTIONAL) \
                and own < _layer("server.studies"):
            problems.append(f"{where} at module level; the embedded world is optional (import it where used)")
    assert not problems, "\n".join(problems)


def test_common_never_imports_client_or_server():
    for module, path in MODULES:
        if module.startswith("common"):
            bad = [(i, line) for i, line, _ in _imports(path) if i.split(".")[0] in ("client", "server")]
            assert not bad, f"{path}: {bad}"


def test_valuation_maths_is_numpy_only():
    """``common.valuation`` imports nothing heavy, even lazily, and importing all of it loads no torch."""
    for module, path in MODULES:
        if module.startswith("common.valuation"):
            heavy = [(i, line) for i, line, _ in _imports(path) if i.split(".")[0] in HEAVY]
            assert not heavy, f"{path}: {heavy}"
    names = [m for m, _ in MODULES if m.startswith("common.valuation")]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in names)
            + f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_readme_layout_table_lists_every_package():
    """README's layout table names every sub-package (and no package that does not exist)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Layout"):]
    listed = set(re.findall(r"^\| `((?:common|server|client)/[a-z_]*/?)` \|", table, re.M))
    packages = {f"{p.parent.relative_to(ROOT).as_posix()}/" for p in ROOT.glob("*/*/__init__.py")
                if p.parts[-3] in ("common", "server")}
    missing = packages - listed
    assert not missing, f"README.md's layout table lacks {sorted(missing)}"
    stale = {p for p in listed if not (ROOT / p).exists()}
    assert not stale, f"README.md's layout table names {sorted(stale)}, which do not exist"
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    for package in sorted(packages):
        assert package.rstrip("/") in architecture, f"docs/architecture.md does not draw {package}"
