"""Command-line options generated from config dataclasses (TRL's habit, one source of truth).

A field's default and help text live once, on the dataclass (``field(metadata={"help": …})``);
the parser, ``--help`` and docs/cli.md's tables are produced from it. Options default to
``None`` on the parser so that "the user set it" is distinguishable from "the default", which
lets ``--spec FILE`` values sit between the dataclass defaults and explicit flags.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from dataclasses import MISSING, Field, fields
from typing import Any

from common.errors import ConfigError


def option_fields(cls) -> Iterator[Field]:
    """The fields of ``cls`` that are command-line options (metadata ``cli`` not False)."""
    for f in fields(cls):
        if f.metadata.get("cli", True) and "help" in f.metadata:
            yield f


def flag_of(f: Field) -> str:
    """``--max-length`` for field ``max_length`` (or the field's own ``flag`` metadata)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _type_name(f: Field) -> str:
    return f.type if isinstance(f.type, str) else f.type.__name__


def _finite(kind):
    """An argparse type that refuses inf/nan (a finite setting is always meant)."""
    def parse(text: str):
        value = kind(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


_METAVARS = {"int": "N", "float": "X", "str": "TEXT"}
_ARG_TYPES = {"int": int, "float": _finite(float), "str": str}


def default_text(f: Field) -> str:
    """The default as docs and help show it (``""`` shown as ``none``)."""
    if f.default is MISSING:
        return "required"
    return "none" if f.default == "" else str(f.default)


def add_dataclass_options(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = ()) -> None:
    """One option per field of ``cls``; help ends with the real default."""
    for f in option_fields(cls):
        if f.name in skip:
            continue
        parser.add_argument(flag_of(f), dest=f.name, type=_ARG_TYPES[_type_name(f)], default=None,
                            metavar=f.metadata.get("metavar", _METAVARS[_type_name(f)]),
                            help=f"{f.metadata['help']} (default: {default_text(f)})")


def chosen_options(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The fields of ``cls`` the user set on the command line."""
    return {f.name: getattr(args, f.name) for f in option_fields(cls)
            if getattr(args, f.name, None) is not None}


def options_table(cls) -> list[tuple[str, str, str]]:
    """``(flag, default, help)`` rows for docs/cli.md (a test checks the doc against them)."""
    return [(flag_of(f), default_text(f), f.metadata["help"]) for f in option_fields(cls)]


def build(cls, values: dict[str, Any]):
    """``cls(**values)`` with a type or range mistake reported as a :class:`ConfigError`."""
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def markdown_table(cls) -> str:
    """The options of ``cls`` as the Markdown table docs/cli.md embeds (a test keeps them equal)."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    rows += [f"| `{flag}` | {default} | {help_text} |" for flag, default, help_text in options_table(cls)]
    return "\n".join(rows)
