"""Library errors name settings, the CLI shows flags (issue 13): one table between the two."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from common.errors import ConfigError
from server.cli.flags import as_cli, setting_flags

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [p for d in ("common", "client", "server") for p in (ROOT / d).rglob("*.py")
           if "cli" not in p.relative_to(ROOT).parts and not p.name.endswith("_pb2.py")]


def _raised_texts(path: Path):
    """The literal text of every ``raise SomethingError(...)`` in ``path`` (f-string parts joined)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for sub in ast.walk(node.exc):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield node.lineno, sub.value


def _all_option_strings() -> set[str]:
    from server.cli.main import build_parser

    found: set[str] = set()

    def walk(parser):
        for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
            found.update(action.option_strings)
            for child in (getattr(action, "choices", None) or {}).values() if action.nargs == "A..." else ():
                walk(child)

    walk(build_parser())
    return found


def test_no_library_error_names_a_command_line_flag():
    offenders = [f"{p.relative_to(ROOT)}:{line}: {text!r}" for p in LIBRARY for line, text in _raised_texts(p)
                 if re.search(r"(^|[\s(])--(?!node-config)[a-z]", text)]  # flower-supernode's own flag
    # The publication service, the studies and report verification take their own options by those names.
    offenders = [o for o in offenders if not o.startswith(("server/publication/", "server/studies/", "server/report/"))]
    assert offenders == [], "name the setting in backticks (`max_length`); the CLI shows it as a flag:\n" \
                            + "\n".join(offenders)


def test_every_setting_a_library_error_names_has_a_flag_the_parser_knows():
    named = {m.group(1) for p in LIBRARY for _, text in _raised_texts(p) for m in re.finditer(r"`([a-z][a-z0-9_]*)`", text)}
    flags = setting_flags()
    assert named, "the scan found no setting named in any error (is the scan broken?)"
    assert sorted(named - set(flags)) == [], "add the setting to server.cli.flags"
    assert sorted(set(flags.values()) - _all_option_strings()) == [], "a flag the parser does not have"


def test_as_cli_puts_flags_in_place_of_settings_and_leaves_the_rest():
    from common.config.job import check_min_owners, check_owner_timeout

    with pytest.raises(ConfigError) as caught:
        check_owner_timeout(float("nan"))
    assert str(caught.value) == "`owner_timeout_s` must be a finite number of seconds > 0, got nan"
    assert as_cli(caught.value) == "--timeout must be a finite number of seconds > 0, got nan"
    with pytest.raises(ConfigError) as caught:
        check_min_owners(4, 3)
    assert as_cli(caught.value) == "--min-owners must be between 1 and the number of owners (3), got 4"
    assert as_cli("`target_modules` and `no_such_setting`") == "--lora-target-modules and `no_such_setting`"
