"""Command-line options generated from config dataclasses (TRL's habit, one source of truth).

A field's default and help text live once, on the dataclass (``field(metadata={"help": …})``);
the parser, ``--help`` and docs/cli.md's tables are produced from it. Options default to
``None`` on the parser so that "the user set it" is distinguishable from "the default", which
lets ``--spec FILE`` values sit between the dataclass defaults and explicit flags.

Metadata a field may carry besides ``help``: ``flag`` (another option name), ``metavar``,
``choices`` (argparse refuses anything else), ``cli=False`` (not an option), ``action="append"``
(a repeatable option; its values become a tuple) and ``parse`` (``parse(value, flag)`` turns
what the user gave into the field's value, raising :class:`ConfigError`, e.g.
:func:`name_value_pairs` for ``NAME=VALUE`` dictionaries).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, Field, fields
from pathlib import Path
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
    """The option's value type: ``int`` for ``int`` and ``int | None`` alike."""
    name = f.type if isinstance(f.type, str) else f.type.__name__
    return name.removesuffix(" | None")


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


def _default_of(f: Field) -> Any:
    """The field's default (its factory called), or ``MISSING`` when it has none."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def field_default(cls, name: str) -> Any:
    """The default of field ``name`` of ``cls`` (its factory called), for options owned elsewhere."""
    for f in fields(cls):
        if f.name == name:
            value = _default_of(f)
            if value is MISSING:
                raise KeyError(f"{cls.__name__}.{name} has no default")
            return value
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def default_text(f: Field) -> str:
    """The default as docs and help show it (``""``, ``None`` and empty collections shown as ``none``)."""
    value = _default_of(f)
    if value is MISSING:
        return "required"
    if value is None or (isinstance(value, (str, tuple, list, dict)) and not value):
        return "none"
    if isinstance(value, (tuple, list)):
        return ", ".join(map(str, value))
    return str(value)


def add_dataclass_options(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = ()) -> None:
    """One option per field of ``cls``; help ends with the real default."""
    for f in option_fields(cls):
        if f.name in skip:
            continue
        kind = _type_name(f)
        repeated = f.metadata.get("action") == "append"
        element = "str" if repeated else kind
        parser.add_argument(flag_of(f), dest=f.name, type=_ARG_TYPES[element], default=None,
                            action="append" if repeated else "store", choices=f.metadata.get("choices"),
                            metavar=f.metadata.get("metavar", _METAVARS.get(element, "TEXT")),
                            help=f"{f.metadata['help']} (default: {default_text(f)})")


def chosen_options(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The fields of ``cls`` the user set on the command line, as the fields' values.

    A repeatable option's values become a tuple, or whatever its ``parse`` makes of them.
    """
    chosen = {}
    for f in option_fields(cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        parse: Callable[[Any, str], Any] | None = f.metadata.get("parse")
        if parse is not None:
            value = parse(value, flag_of(f))
        elif isinstance(value, list):
            value = tuple(value)
        chosen[f.name] = value
    return chosen


def parse_pairs(items: Sequence[str], option: str, *, paths: bool = True, what: str = "PATH") -> dict[str, str]:
    """``NAME=VALUE`` pairs, checked for form and uniqueness (and existence, for paths)."""
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value:
            raise ConfigError(f"{option} {item!r}: expected NAME={what}")
        if name in pairs:
            raise ConfigError(f"{option} {name}: named twice")
        if paths:
            if not Path(value).expanduser().exists():
                raise ConfigError(f"{option} {name}: {value}: no such file or directory")
            value = str(Path(value).expanduser().resolve())
        pairs[name] = value
    return pairs


def name_value_pairs(what: str, *, paths: bool) -> Callable[[Sequence[str], str], dict[str, str]]:
    """A ``parse`` for a repeatable ``NAME=WHAT`` option: a dictionary (see :func:`parse_pairs`)."""
    def parse(items: Sequence[str], option: str) -> dict[str, str]:
        return parse_pairs(items, option, paths=paths, what=what)
    return parse


def existing_path(text: str, option: str) -> str:
    """A ``parse`` for a file or directory that must exist now: its absolute path."""
    path = Path(text).expanduser()
    if not path.exists():
        raise ConfigError(f"{option} {text}: no such file or directory")
    return str(path.resolve())


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
