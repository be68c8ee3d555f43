"""User-facing error types.

Every mistake a user can make (a bad file, a bad option) is raised as a :class:`FairPoolError`
subclass so the CLI can print one ``error: <message>`` line and exit 2 instead of a traceback.
Anything else escaping the CLI is a bug in FairPool, and a traceback is then the right output.

A message names a setting by its field name in backticks (`` `min_owners` ``), never by a
command-line flag: a Python caller, a ``--spec`` file and a job file know the setting by that
name, and the CLI shows each error through :func:`server.cli.flags.as_cli`, which puts the flag
(``--min-owners``) in its place.
"""

from __future__ import annotations

from typing import Any


def one_line(message: object, limit: int = 240) -> str:
    """A library's error (or message) squeezed into one bounded line: some span several, and a
    user-facing error is always one line. An exception with no text is named by its type."""
    text = " ".join(str(message).split())
    if not text and isinstance(message, BaseException):
        text = type(message).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class FairPoolError(Exception):
    """Base of every user-facing error; its ``str()`` is the whole message shown to the user."""


class ConfigError(FairPoolError):
    """An option or configuration value is invalid (bad flag, out-of-range setting, ...)."""


class DataError(FairPoolError):
    """A data file cannot be used; says where (file, line, field) and what is wrong.

    The structured attributes let callers (and tests) react to the location without parsing
    the message, while ``str()`` gives the compiler-style ``path:line: field 'x': problem``
    form that editors and terminals make clickable.

    ``line`` is 1-based. For line-oriented text (JSONL, CSV) it is the line in the file (for
    CSV the header is line 1); for JSON arrays, Parquet and ``datasets`` directories it is the
    record number. ``None`` means the problem concerns the file as a whole.
    """

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = self.problem if self.field is None else f"field {self.field!r}: {self.problem}"
        return f"{where}: {what}"

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle by their positional args; keyword-only attributes would be lost
        # when an error crosses a process boundary (e.g. a simulated client under Ray).
        return (_rebuild_data_error, (self.path, self.problem, self.line, self.field))


def _rebuild_data_error(
    path: str, problem: str, line: int | None, field: str | None
) -> DataError:
    """Unpickling helper for :class:`DataError` (see ``DataError.__reduce__``)."""
    return DataError(path, problem, line=line, field=field)
