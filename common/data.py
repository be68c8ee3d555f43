"""Loading and saving a data owner's private preference dataset.

A preference dataset is a list of ``(prompt, chosen, rejected)`` triples, the input of DPO
fine-tuning. Owners bring their data in whatever shape they have, so FairPool takes every
preference layout TRL's ``DPOTrainer`` takes, in every file format an owner is likely to hold:

- *standard*: the three fields are strings;
- *conversational*: each field is a list of ``{"role": ..., "content": ...}`` messages (the
  content a string; other keys of a message, e.g. ``tool_calls`` or a ``name``, are ignored:
  FairPool trains on role and content only, and a message whose content is not a string, such
  as multimodal content blocks, is refused);
- *implicit prompt*: only ``chosen`` and ``rejected``, strings or messages, the prompt being
  their shared beginning (as in HH-RLHF). The prompt is extracted at load time with TRL's own
  ``extract_prompt``, so every loaded :class:`PreferenceExample` has an explicit prompt and
  training and scoring see exactly the split TRL would make. A row that has a ``prompt`` but
  whose prompt is a string while chosen is a conversation (or the reverse) is implicit too:
  that is TRL's ``maybe_extract_prompt`` rule (some datasets add a plain-text prompt column
  beside full conversations).

The file formats are JSONL, JSON, CSV, Parquet, a ``datasets`` directory (any split of a
``DatasetDict``, chosen with ``split=`` or a ``DIR:SPLIT`` reference) and gzip-compressed
JSONL / JSON. Each format gets a small reader that only turns the file into
``(line_number, record)`` pairs; one shared validator then decides what a valid example is.
That keeps the rules identical across formats and every error message pointing at the exact
file and line, because a valuation run that dies on row 40 312 of a private file with a
traceback is useless to an owner who cannot share the file for debugging.

One file holds one layout: its first row decides standard or conversational, explicit or
implicit prompt, and a later row of another layout is a structural error. Mixed files are
almost always a conversion gone wrong half-way, and one model cannot be trained half on chat
templates and half on raw text without the owner knowing.

Two kinds of bad input are told apart:

- *Structural* mistakes mean the file does not say what the owner thinks it says (it does not
  parse, a field is missing or of the wrong type, a CSV row is ragged, a key appears twice, a
  row's layout differs from the first row's). Guessing would train on misread data, so they
  raise one :class:`DataError` naming file, line and field, before anything is trained or
  written.
- *Row-level quality* problems leave a well-formed row that carries no usable preference: a
  field that is not valid UTF-8 text, an empty field (or message), chosen equal to rejected,
  an exact duplicate, an implicit prompt with nothing shared to extract. Real datasets have a
  few of these; failing a 100 000-row file for one of them helps nobody, so such rows are
  dropped and counted by reason (:data:`DROP_REASONS`), and the counts travel to the
  coordinator's report. A file whose every row is dropped is an error.

Text formats are decoded with ``surrogateescape`` so that a byte that is not UTF-8 stays
inside the value it belongs to: in a field it drops that row (``invalid_utf8``), anywhere
else (JSON syntax, a CSV header) it is a structural error naming the byte. They are read as a
stream (JSONL and CSV a row at a time, a JSON document one array element at a time), so the
memory a reader needs follows the largest record, not the file: a 10 GB export loads in the
memory its kept examples take.

TRL (``trl.data_utils``) is imported only when a file holds lists or implicit prompts: it
pulls in ``transformers``, seconds of start-up that a plain string file does not need.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from common.errors import DataError, one_line
from common.storage.atomic import atomic_writer

FIELDS: tuple[str, ...] = ("prompt", "chosen", "rejected")
"""The fields of every example, in canonical order (``prompt`` may be implicit in a file)."""

RESPONSES: tuple[str, ...] = ("chosen", "rejected")
"""The fields every preference row must have, implicit prompt or not."""

DATASETS_DIR = "directory written by datasets' save_to_disk (DIR:SPLIT picks a split)"

SUPPORTED_FORMATS: tuple[str, ...] = (
    ".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".parquet", DATASETS_DIR,
)
"""What :func:`load_preferences` accepts; listed verbatim when a format is not supported."""

DROP_REASONS: tuple[str, ...] = ("invalid_utf8", "field_too_long", "empty_field", "chosen_equals_rejected",
                                 "duplicate")
"""Why a well-formed row can be dropped, in the order they are checked (a row counts once).

``invalid_utf8``: a field (a message's role or content) holds bytes that are not UTF-8 (or, in
JSON, an unpaired surrogate escape such as ``"\\udc80"``), which tokenizers cannot take.
``field_too_long``: a field (a conversation's contents together) is longer than
:data:`MAX_FIELD_CHARS` characters. ``empty_field``: a field is empty or whitespace-only, a conversation has no messages or a
message has no content, or an implicit prompt is empty (chosen and rejected share no
beginning). ``chosen_equals_rejected``: the responses are equal once surrounding whitespace
is ignored (for conversations: the same roles, contents equal once stripped), so the pair
expresses no preference. ``duplicate``: an exact repeat of an earlier kept example, which
would double that example's weight.
"""

MAX_FIELD_CHARS = 1_000_000
"""Longest field (a conversation: its contents together) kept, in characters. Far beyond any
``max_length``; a longer one (a 50 MB prompt) is dropped as ``field_too_long`` before it is
tokenised, which would otherwise take gigabytes."""
MAX_FILE_BYTES = 16 * 2**30
"""Largest single data file read (datasets directories are memory-mapped and not limited)."""

_ARROW_BATCH_ROWS = 4096
_UTF8_BOM = b"\xef\xbb\xbf"
_LINES_SHOWN = 3
"""How many line numbers per drop reason a summary names (enough to find the pattern)."""
_CSV_FIELD_LIMIT = 2**31 - 1
"""The csv module refuses cells over 128 KiB; a long cell is a length problem, handled later."""
_CHUNK_BYTES = 64 * 2**10
"""How much of a JSON document is read at a time: large enough that per-read costs vanish,
small beside any record worth reading."""
_MESSAGES_TYPE = "list<struct<role: string, content: string>>"
"""The Arrow type of a conversation column, as messages name it."""

Record = tuple[int | None, Any]
"""A ``(line_number, raw_record)`` pair produced by a format reader."""


@dataclass(frozen=True)
class Message:
    """One turn of a conversation. Only role and content are kept (module docstring)."""

    role: str
    content: str


Conversation = tuple[Message, ...]
"""A conversational field: its messages in order (a tuple, so examples stay hashable)."""


@dataclass(frozen=True)
class PreferenceExample:
    """One DPO training example: a prompt, the preferred and the dispreferred response.

    The three fields are all strings (standard) or all conversations (conversational); a list
    of :class:`Message` is stored as a tuple. The prompt is always explicit: the loader
    extracts implicit ones.
    """

    prompt: str | Conversation
    chosen: str | Conversation
    rejected: str | Conversation

    def __post_init__(self) -> None:
        if isinstance(self.prompt, str) and isinstance(self.chosen, str) and isinstance(self.rejected, str):
            return  # the common case, kept cheap: examples are made by the hundred thousand
        kinds = set()
        for name in FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                kinds.add(str)
                continue
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, name, value)
            if not isinstance(value, tuple) or not all(isinstance(m, Message) for m in value):
                raise TypeError(f"PreferenceExample.{name} must be a str or a tuple of Message, "
                                f"got {type(value).__name__}")
            kinds.add(tuple)
        if len(kinds) > 1:
            raise ValueError("PreferenceExample fields must be all strings or all conversations")

    @property
    def conversational(self) -> bool:
        """True when the fields are conversations (tuples of :class:`Message`)."""
        return not isinstance(self.prompt, str)

    def as_dict(self) -> dict[str, str | list[dict[str, str]]]:
        """The example as TRL's row: strings as they are, conversations as message dicts."""
        return {"prompt": as_trl(self.prompt), "chosen": as_trl(self.chosen),
                "rejected": as_trl(self.rejected)}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> PreferenceExample:
        """The inverse of :meth:`as_dict` (checks the shape only, not the content)."""
        return cls(*(_from_trl(row[name]) for name in FIELDS))


def as_trl(value: str | Conversation) -> str | list[dict[str, str]]:
    """One field as TRL takes it: a string as is, a conversation as ``{"role", "content"}`` dicts."""
    if isinstance(value, str):
        return value
    return [{"role": message.role, "content": message.content} for message in value]


def _from_trl(value: Any) -> str | Conversation:
    """The inverse of :func:`as_trl`; extra message keys are dropped."""
    if isinstance(value, str):
        return value
    return tuple(Message(message["role"], message["content"]) for message in value)


@dataclass(frozen=True)
class LoadReport:
    """What happened while loading, so the owner and the coordinator see how much data was used.

    ``dropped`` counts dropped rows by reason and always holds every :data:`DROP_REASONS` key
    (possibly 0), so consumers need no default. ``dropped_lines`` names the first few lines of
    each reason: for the owner's eyes only, it never leaves the client.
    """

    path: str
    rows_read: int
    kept: int
    dropped: dict[str, int]
    dropped_lines: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False)

    def describe_drops(self) -> str:
        """``"empty_field: 2 (lines 3, 7), duplicate: 1 (line 9)"``, or ``"none"``."""
        parts = []
        for reason in DROP_REASONS:
            count = self.dropped.get(reason, 0)
            if not count:
                continue
            lines = ", ".join(map(str, self.dropped_lines.get(reason, ())))
            if lines and count > len(self.dropped_lines[reason]):
                lines += ", ..."
            where = f" ({'line' if count == 1 else 'lines'} {lines})" if lines else ""
            parts.append(f"{reason}: {count}{where}")
        return ", ".join(parts) or "none"


# --------------------------------------------------------------------------------------------
# Public API


def parse_data_ref(text: str) -> tuple[str, str | None]:
    """Split ``"DIR:SPLIT"`` into a ``datasets`` directory and a split name.

    The whole text wins when it exists as a path (a file name may contain ``:``); otherwise,
    when the part before the last ``:`` is an existing directory, that is ``(DIR, SPLIT)``;
    otherwise ``(text, None)``, so a mistyped path is reported as the path the user gave.
    """
    text = os.fspath(text)
    try:
        if os.path.exists(text):
            return text, None
        head, sep, tail = text.rpartition(":")
        if sep and head and tail and os.path.isdir(head):
            return head, tail
    except (OSError, ValueError):  # e.g. an embedded NUL: reported when the path is opened
        pass
    return text, None


def load_preferences(
    path: str | os.PathLike[str], *, split: str | None = None, drop_duplicates: bool = True
) -> tuple[list[PreferenceExample], LoadReport]:
    """Load and validate a preference dataset; raise :class:`DataError` on any user mistake.

    The format is chosen by the extension (or "is a directory" for ``datasets``), never by
    sniffing content, so a misnamed file fails loudly instead of being half-parsed. ``split``
    (or a ``"DIR:SPLIT"`` path, :func:`parse_data_ref`) picks a split of a ``DatasetDict``;
    without one a ``DatasetDict`` must have ``train``. Structural mistakes raise; rows with a
    quality problem are dropped and counted (module docstring). Implicit prompts are
    extracted, so every example has an explicit one. ``drop_duplicates=False`` keeps exact
    duplicates (the other reasons still apply), for callers that need the file's rows one to
    one.
    """
    shown, target, split = _resolve(path, split)
    examples: list[PreferenceExample] = []
    seen: set[PreferenceExample] = set()
    counts = dict.fromkeys(DROP_REASONS, 0)
    lines: dict[str, list[int]] = {}
    rows_read = 0
    shape: _Shape | None = None
    for line, record in _read_records(shown, target, split, "preferences"):
        rows_read += 1
        if shape is None:
            shape = _shape_of(shown, line, record)
        example = _example_from(shown, line, record, shape)
        reason = drop_reason(example)
        if reason is None and drop_duplicates:
            reason = "duplicate" if example in seen else None
            seen.add(example)
        if reason is None:
            examples.append(example)
            continue
        counts[reason] += 1
        shown_lines = lines.setdefault(reason, [])
        if line is not None and len(shown_lines) < _LINES_SHOWN:
            shown_lines.append(line)
    if rows_read == 0:
        raise DataError(shown, "empty file: no rows")
    report = LoadReport(shown, rows_read, len(examples), counts,
                        {reason: tuple(found) for reason, found in lines.items()})
    if not examples:
        dropped = "the only row was dropped" if rows_read == 1 else f"all {rows_read} rows dropped"
        hint = ""
        if shape is not None and shape.implicit and counts["empty_field"]:
            hint = ("; the rows have no explicit prompt, so the prompt is the shared beginning of "
                    "chosen and rejected (TRL's implicit prompt)")
        raise DataError(shown, f"no usable examples: {dropped} ({report.describe_drops()}){hint}")
    return examples, report


def load_prompts(path: str | os.PathLike[str], *, split: str | None = None) -> list[str | Conversation]:
    """Load prompts for generation from any supported format and layout.

    A file of prompts needs a ``prompt`` field per record (a string or a conversation; other
    fields are ignored), so preference files qualify too and the evaluation set's prompts can
    be decoded without a separate file; for implicit-prompt rows the prompt is the one
    :func:`load_preferences` extracts. Prompts are few and chosen by the coordinator, so a bad
    one is an error rather than a silent drop.
    """
    shown, target, split = _resolve(path, split)
    prompts: list[str | Conversation] = []
    shape: _Shape | None = None
    for line, record in _read_records(shown, target, split, "prompts"):
        if not isinstance(record, Mapping):
            raise DataError(shown, f"record must be an object with a prompt field, got {_type_name(record)}",
                            line=line)
        if shape is None:
            shape = _prompt_shape_of(shown, line, record)
        if shape.implicit:
            prompt = _example_from(shown, line, record, shape).prompt
        else:
            prompt = _field_value(shown, line, record, "prompt", shape)
        prompts.append(_check_prompt(shown, line, prompt, shape.implicit))
    if not prompts:
        raise DataError(shown, "empty file: no rows")
    return prompts


def save_preferences_jsonl(
    examples: Iterable[PreferenceExample], path: str | os.PathLike[str]
) -> None:
    """Write examples as UTF-8 JSONL (TRL's rows, :meth:`PreferenceExample.as_dict`), atomically.

    The temp file lives in the target directory so ``os.replace`` is a same-filesystem rename:
    a crash or a full disk leaves either the old file or the new one, never a truncated one
    that a later run would load as a smaller dataset. Non-ASCII text is kept readable
    (``ensure_ascii=False``); JSON escapes newlines, so one example is always one line.
    """
    try:
        with atomic_writer(os.fspath(path)) as out:  # the umask-derived mode a plain open gives
            for example in examples:
                out.write(json.dumps(example.as_dict(), ensure_ascii=False) + "\n")
    except OSError as exc:
        raise DataError(os.fspath(path), f"cannot write: {exc.strerror or exc}") from exc


def validate_record(path: str, line: int | None, record: Any) -> PreferenceExample:
    """Turn one raw *standard* record into an example, or raise a :class:`DataError` saying why not.

    The standard layout on its own, for callers that validate single rows: an object whose
    three fields are strings. (Files go through the layout-aware validator, which also takes
    conversations and implicit prompts.) Values are kept exactly as given (not stripped):
    whitespace can be meaningful to a tokenizer, and the owner's data should reach training
    unchanged. Quality problems of a well-formed example are :func:`drop_reason`'s business.
    """
    if not isinstance(record, Mapping):
        raise DataError(
            path,
            f"record must be an object with fields {', '.join(FIELDS)}, "
            f"got {_type_name(record)}",
            line=line,
        )
    repeated = getattr(record, "repeated_keys", ())
    values = []
    for name in FIELDS:
        if name in repeated:
            raise DataError(path, "key appears more than once in the object: which value is meant?",
                            line=line, field=name)
        if name not in record:
            raise DataError(path, "missing", line=line, field=name)
        value = record[name]
        if not isinstance(value, str):
            raise DataError(path, f"must be a string, got {_type_name(value)}", line=line, field=name)
        values.append(value)
    return PreferenceExample(*values)


def drop_reason(example: PreferenceExample) -> str | None:
    """Why a well-formed example carries no usable preference (a :data:`DROP_REASONS` entry).

    ``duplicate`` is not decided here: it depends on the rows before, see
    :func:`load_preferences`. ``None`` means the example is usable.
    """
    values = (example.prompt, example.chosen, example.rejected)
    if not example.conversational:
        if not all(map(_is_utf8_text, values)):
            return "invalid_utf8"
        if any(len(value) > MAX_FIELD_CHARS for value in values):
            return "field_too_long"
        if not all(value.strip() for value in values):
            return "empty_field"
        if example.chosen.strip() == example.rejected.strip():
            return "chosen_equals_rejected"
        return None
    if not all(_is_utf8_text(m.role) and _is_utf8_text(m.content) for value in values for m in value):
        return "invalid_utf8"
    if any(sum(len(m.content) for m in value) > MAX_FIELD_CHARS for value in values):
        return "field_too_long"
    if not all(value and all(m.content.strip() for m in value) for value in values):
        return "empty_field"
    if len(example.chosen) == len(example.rejected) and all(
        a.role == b.role and a.content.strip() == b.content.strip()
        for a, b in zip(example.chosen, example.rejected)
    ):
        return "chosen_equals_rejected"
    return None


# --------------------------------------------------------------------------------------------
# Layout: the first row decides it, every row is validated against it


@dataclass(frozen=True)
class _Shape:
    """A file's layout, decided by its first row (``line``) from field ``decided_by``."""

    conversational: bool
    implicit: bool
    line: int | None
    decided_by: str


def _trl() -> Any:
    """``trl.data_utils``, imported on first use (it imports ``transformers``: seconds)."""
    from trl import data_utils

    return data_utils


def _kind(value: Any) -> bool | None:
    """True for a list of messages (TRL's ``is_conversational``), None for an empty list or a
    null (either layout: the row's other fields decide), False for anything else (a string,
    or a value that is neither)."""
    if isinstance(value, list):
        return bool(_trl().is_conversational({"chosen": value})) if value else None
    return None if value is None else False


def _resolve(path: str | os.PathLike[str], split: str | None) -> tuple[str, Path, str | None]:
    """The name to show, the path to read and the split, from a path or ``DIR:SPLIT``."""
    shown = os.fspath(path)
    target, ref_split = parse_data_ref(shown)
    if split is not None and ref_split is not None and split != ref_split:
        raise DataError(shown, f"two splits given: {ref_split!r} in the path and {split!r} as the split")
    split = split if split is not None else ref_split
    if split is not None and not split:
        raise DataError(shown, "empty split name")
    return shown, Path(target), split


def _not_an_object(path: str, line: int | None, record: Any) -> DataError:
    return DataError(path, f"record must be an object with fields {', '.join(FIELDS)}, "
                           f"got {_type_name(record)}", line=line)


def _keys_found(record: Mapping[str, Any], limit: int = 8) -> str:
    keys = [_show(key) for key in list(record)[: limit + 1]]
    shown = ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
    return shown or "none"


def _shape_of(path: str, line: int | None, record: Any) -> _Shape:
    """The layout a first preference row sets: conversational or not, implicit prompt or not.

    Conversational when chosen (else rejected, else the prompt) is a list of messages. The
    prompt is implicit when the row has none, or when it is a string beside conversations or
    the reverse (TRL's ``maybe_extract_prompt`` rule).
    """
    if not isinstance(record, Mapping):
        raise _not_an_object(path, line, record)
    if "chosen" not in record and "rejected" not in record:
        if "prompt" in record:
            raise DataError(path, "missing", line=line, field="chosen")
        raise DataError(
            path, f"missing fields prompt, chosen and rejected (keys found: {_keys_found(record)}); "
            "a row needs all three, or chosen and rejected alone when the prompt is their shared "
            "beginning", line=line,
        )
    present = [name for name in ("chosen", "rejected", "prompt") if name in record]
    kinds = {name: _kind(record[name]) for name in present}
    decided_by = next((name for name in present if kinds[name] is not None), present[0])
    conversational = bool(kinds[decided_by])
    prompt_kind = kinds.get("prompt")
    implicit = "prompt" not in record or (prompt_kind is not None and prompt_kind != conversational)
    return _Shape(conversational, implicit, line, decided_by)


def _prompt_shape_of(path: str, line: int | None, record: Mapping[str, Any]) -> _Shape:
    """The layout of a prompts file: a prompt per record, or preference rows (any layout)."""
    if all(name in record for name in RESPONSES):
        return _shape_of(path, line, record)
    if "prompt" not in record:
        raise DataError(path, "missing", line=line, field="prompt")
    return _Shape(bool(_kind(record["prompt"])), False, line, "prompt")


def _first_row(shape: _Shape) -> str:
    return "first row" if shape.line is None else f"first row (line {shape.line})"


def _mismatch(shape: _Shape, line: int | None, got: str) -> str:
    """Why a field of the other layout is refused, naming the row that set the layout."""
    if line == shape.line:
        other = "a list of messages" if shape.conversational else "a string"
        return (f"{got}, but field {shape.decided_by!r} of the same row is {other} "
                "(a row's fields are all strings or all lists of messages)")
    has = "lists of messages" if shape.conversational else "strings"
    return f"{got} in a file whose {_first_row(shape)} has {has}"


def _example_from(path: str, line: int | None, record: Any, shape: _Shape) -> PreferenceExample:
    """One row as an example of the file's layout, implicit prompt extracted; raise if it is
    malformed or of another layout. Quality problems are :func:`drop_reason`'s business."""
    if not isinstance(record, Mapping):
        raise _not_an_object(path, line, record)
    if not shape.implicit:
        return PreferenceExample(_field_value(path, line, record, "prompt", shape),
                                 _field_value(path, line, record, "chosen", shape),
                                 _field_value(path, line, record, "rejected", shape))
    if "prompt" in record and _kind(record["prompt"]) is shape.conversational:
        raise DataError(path, f"explicit in this row, but the file's {_first_row(shape)} has an implicit "
                        "prompt (the shared beginning of chosen and rejected)", line=line, field="prompt")
    return _extract_prompt(_field_value(path, line, record, "chosen", shape),
                           _field_value(path, line, record, "rejected", shape))


def _field_value(path: str, line: int | None, record: Mapping[str, Any], name: str,
                 shape: _Shape) -> str | Conversation:
    """``record[name]`` as the file's layout wants it; raise naming the field otherwise.

    Values are kept exactly as given (not stripped): whitespace can be meaningful to a
    tokenizer, and the owner's data should reach training unchanged.
    """
    if name in getattr(record, "repeated_keys", ()):
        raise DataError(path, "key appears more than once in the object: which value is meant?",
                        line=line, field=name)
    if name not in record:
        raise DataError(path, "missing", line=line, field=name)
    value = record[name]
    if shape.conversational:
        if isinstance(value, list):
            return _conversation(path, line, name, value)
        if isinstance(value, str):
            raise DataError(path, _mismatch(shape, line, "a string"), line=line, field=name)
        raise DataError(path, f"must be a list of messages, got {_type_name(value)}", line=line, field=name)
    if isinstance(value, str):
        return value
    if _kind(value):
        raise DataError(path, _mismatch(shape, line, "a list of messages"), line=line, field=name)
    raise DataError(path, f"must be a string, got {_type_name(value)}", line=line, field=name)


def _conversation(path: str, line: int | None, name: str, value: list[Any]) -> Conversation:
    """A list of ``{"role", "content"}`` objects as messages; other keys are ignored."""
    messages = []
    for number, message in enumerate(value, start=1):
        where = f"message {number}"
        if not isinstance(message, Mapping):
            raise DataError(path, f"{where} must be an object with role and content, got {_type_name(message)}",
                            line=line, field=name)
        repeated = getattr(message, "repeated_keys", ())
        for key in ("role", "content"):
            if key in repeated:
                raise DataError(path, f"{where}: key {key!r} appears more than once: which value is meant?",
                                line=line, field=name)
            if key not in message:
                raise DataError(path, f"{where}: {key!r} missing", line=line, field=name)
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or not role.strip():
            got = "an empty string" if isinstance(role, str) else _type_name(role)
            raise DataError(path, f"{where}: 'role' must be a non-empty string, got {got}", line=line, field=name)
        if not isinstance(content, str):
            raise DataError(path, f"{where}: 'content' must be a string, got {_type_name(content)}",
                            line=line, field=name)
        messages.append(Message(role, content))
    return tuple(messages)


def _extract_prompt(chosen: str | Conversation, rejected: str | Conversation) -> PreferenceExample:
    """TRL's ``extract_prompt``: the shared beginning of chosen and rejected becomes the prompt.

    TRL's own function, so the split is exactly TRL's (for strings it also moves a space
    before the split point into the responses). It needs both responses non-empty; with one
    empty, the prompt is left empty and the row is dropped as ``empty_field``.
    """
    if not chosen or not rejected:
        empty: str | Conversation = "" if isinstance(chosen, str) else ()
        return PreferenceExample(empty, chosen, rejected)
    parts = _trl().extract_prompt({"chosen": as_trl(chosen), "rejected": as_trl(rejected)})
    return PreferenceExample(*(_from_trl(parts[name]) for name in FIELDS))


def _check_prompt(path: str, line: int | None, prompt: str | Conversation, implicit: bool) -> str | Conversation:
    """A prompt for generation, or a :class:`DataError`: an unusable prompt is not dropped."""
    note = " (the implicit prompt: the shared beginning of chosen and rejected)" if implicit else ""
    bad_text = "not valid UTF-8 text (undecodable byte or unpaired surrogate)"
    if isinstance(prompt, str):
        if not _is_utf8_text(prompt):
            raise DataError(path, bad_text, line=line, field="prompt")
        if not prompt.strip():
            raise DataError(path, f"empty or whitespace-only{note}", line=line, field="prompt")
        return prompt
    if not prompt:
        raise DataError(path, f"empty: no messages{note}", line=line, field="prompt")
    for number, message in enumerate(prompt, start=1):
        if not (_is_utf8_text(message.role) and _is_utf8_text(message.content)):
            raise DataError(path, f"message {number}: {bad_text}", line=line, field="prompt")
        if not message.content.strip():
            raise DataError(path, f"message {number}: content is empty or whitespace-only",
                            line=line, field="prompt")
    return prompt


# --------------------------------------------------------------------------------------------
# Validation helpers


def _is_utf8_text(value: str) -> bool:
    """False for strings holding surrogates: undecodable bytes (kept by ``surrogateescape``)
    or unpaired ``\\udXXX`` JSON escapes; both crash tokenizers and UTF-8 writers later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_JSON_TYPE_NAMES = {
    type(None): "null", bool: "boolean", int: "number", float: "number",
    list: "array", dict: "object", str: "string",
}


def _type_name(value: Any) -> str:
    """A type name the owner recognises from their file (JSON names where they apply)."""
    if isinstance(value, dict):
        return "object"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _show(name: object) -> str:
    """A user-given name (a column, a key) as it can safely appear in a one-line message.

    Names can hold newlines or undecodable bytes; ``repr`` escapes both, so the message stays
    one printable line that also survives a UTF-8-only channel (Flower's ConfigRecord).
    """
    text = str(name)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def _require_columns(path: str, columns: Sequence[str], line: int | None,
                     fields: Sequence[str] = FIELDS) -> None:
    """Fail once, at the header/schema, when a tabular file lacks a required column.

    Reporting it per row would name row 1 for what is really a file-level mistake.
    """
    for name in fields:
        if name not in columns:
            raise DataError(
                path, f"missing column (columns found: {', '.join(map(_show, columns)) or 'none'})",
                line=line, field=name,
            )


def _pick_columns(path: str, columns: Sequence[str], line: int | None, purpose: str,
                  usable: Any = None) -> tuple[str, ...]:
    """The columns to read from a tabular file, or a :class:`DataError` for a missing one.

    Preferences need chosen and rejected; prompt is read when present (else it is implicit).
    Prompts need a prompt column, or chosen and rejected to extract it from; beside a prompt
    column, chosen and rejected are read too when ``usable`` (TRL's rule can make a string
    prompt beside conversations implicit), and otherwise ignored as before.
    """
    has_pair = all(name in columns for name in RESPONSES)
    if purpose == "prompts":
        if "prompt" in columns:
            if has_pair and (usable is None or all(map(usable, RESPONSES))):
                return FIELDS
            return ("prompt",)
        if not has_pair:
            _require_columns(path, columns, line, ("prompt",))
        return RESPONSES
    _require_columns(path, columns, line, RESPONSES)
    return FIELDS if "prompt" in columns else RESPONSES


def _text_type(kind: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _is_list_type(kind: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def _messages_type(kind: Any) -> bool:
    """``list<struct<role: string, content: string>>`` (other struct fields allowed, ignored)."""
    import pyarrow as pa

    if not _is_list_type(kind) or not pa.types.is_struct(kind.value_type):
        return False
    struct = kind.value_type
    return all(struct.get_field_index(name) >= 0 and _text_type(struct.field(name).type)
               for name in ("role", "content"))


def _usable_column(kind: Any) -> bool:
    return _text_type(kind) or _messages_type(kind)


def _require_text_columns(path: str, schema: Any, fields: Sequence[str]) -> None:
    """Fail at the schema when a required Arrow column holds neither text nor messages.

    Text is a string column; a conversation is a ``list<struct<role: string, content:
    string>>`` column. A column of another type (numbers, binary, lists of strings) is wrong
    for every row at once; saying so names the real mistake, where a per-row check would
    blame row 1.
    """
    import pyarrow as pa

    for name in fields:
        kind = schema.field(name).type
        if _usable_column(kind):
            continue
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        hint = f" (conversations need {_MESSAGES_TYPE})" if _is_list_type(kind) else ""
        raise DataError(path, f"column has type {kind}{hint}, expected string", field=name)


# --------------------------------------------------------------------------------------------
# Format dispatch and readers: each yields (line_number, record) pairs and validates nothing
# but the file's syntax. ``purpose`` ("preferences" or "prompts") picks the tabular columns.


def _format_of(path: Path) -> str:
    """The format key of a file: its extension, two of them for a gzip file (``.jsonl.gz``)."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if not suffixes:
        return ""
    if suffixes[-1] == ".gz" and len(suffixes) > 1:
        return "".join(suffixes[-2:])
    return suffixes[-1]


def _require_regular_file(shown: str, path: Path) -> None:
    """Only regular files (symbolic links followed) of bounded size are read.

    A FIFO or a device (``/dev/zero`` behind a symlink) would block forever or never end, and
    an absurdly large file would exhaust memory before any row is checked: both are refused
    at once, the same way for owners' files and the evaluation set.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise DataError(shown, f"cannot access: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode)
                or stat.S_ISBLK(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "not a file")
        raise DataError(shown, f"not a regular file ({kind}): refused, reading it could block or never end")
    if info.st_size > MAX_FILE_BYTES:
        raise DataError(shown, f"file of {info.st_size / 2**30:.1f} GiB is larger than the "
                               f"{MAX_FILE_BYTES / 2**30:.0f} GiB limit; split it, or save it as a datasets directory")


def _read_records(shown: str, path: Path, split: str | None, purpose: str) -> Iterator[Record]:
    """Pick the reader for ``path``; check existence and format before any parsing."""
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except OSError as exc:
        raise DataError(shown, f"cannot access: {exc.strerror or exc}") from exc
    except ValueError as exc:  # an embedded NUL byte
        raise DataError(shown, f"cannot access: {exc}") from None
    if not exists:
        raise DataError(shown, "no such file or directory")
    if is_dir:
        return _guard_io(shown, _read_datasets_dir(shown, path, purpose, split))
    _require_regular_file(shown, path)
    if split is not None:
        raise DataError(shown, f"split {split!r} given, but only a datasets directory has splits "
                               "and this is a file")
    suffix = _format_of(path)
    readers = {
        ".jsonl": _read_jsonl, ".jsonl.gz": _read_jsonl_gz, ".json": _read_json,
        ".json.gz": _read_json_gz, ".csv": _read_csv, ".parquet": _read_parquet,
    }
    reader = readers.get(suffix)
    if reader is None:
        found = f"'{suffix}'" if suffix else "no extension"
        raise DataError(
            shown, f"unsupported format ({found}); supported: {', '.join(SUPPORTED_FORMATS)}"
        )
    return _guard_io(shown, reader(shown, path, purpose))


def _guard_io(shown: str, records: Iterator[Record]) -> Iterator[Record]:
    """Turn OS-level read failures (permissions, I/O errors) into a :class:`DataError`."""
    try:
        yield from records
    except OSError as exc:
        raise DataError(shown, f"cannot read: {exc.strerror or exc}") from exc


def _decode(raw: bytes) -> tuple[str, int | None]:
    """Decode UTF-8, keeping undecodable bytes as surrogates; also return the first bad offset.

    Strict decoding first: it is the fast path, and it finds the offset for error messages.
    """
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", "surrogateescape"), exc.start


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
"""What ``surrogateescape`` turns an undecodable byte into (the UTF-8 codec makes no other
surrogates: encoded ones are undecodable bytes too)."""


class _Utf8Chunks:
    """A binary stream decoded as UTF-8 a chunk at a time (BOM tolerated), undecodable bytes
    kept as surrogates (module docstring).

    ``bad_byte`` notes the first undecodable byte, ``"byte 0xe9 at line 3, column 16"``
    (the column in bytes), for messages about a document that then fails to parse. It is
    worked out while the text before the byte is still at hand, so it names the place in the
    whole file although earlier chunks are gone; decoding is incremental, so a character cut
    by a chunk boundary is still one character.
    """

    def __init__(self, handle: io.BufferedIOBase) -> None:
        self._handle = handle
        # Not "utf-8-sig": at the end of a file that is only part of a BOM it returns nothing.
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._started = False  # whether text was decoded yet (a BOM can only come first)
        self._lines = 0  # newlines decoded so far (kept up only until a bad byte is found)
        self._column = 0  # bytes since the last of them
        self.bad_byte = ""
        self.done = False

    def read(self) -> str:
        """The next chunk's text; ``done`` once the stream is exhausted. Mid-stream the text
        can be empty (a tiny read holding only part of a character)."""
        raw = self._handle.read(_CHUNK_BYTES)
        self.done = not raw
        text = self._decoder.decode(raw, final=self.done)
        if text and not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if not self.bad_byte:
            self._look_for_bad_byte(text)
        return text

    def _look_for_bad_byte(self, text: str) -> None:
        """Note the first undecodable byte of ``text``, else count its lines and columns on."""
        found = None if text.isascii() else _ESCAPED_BYTE.search(text)
        end = len(text) if found is None else found.start()
        line_start = text.rfind("\n", 0, end) + 1
        column = len(text[line_start:end].encode()) + (0 if line_start else self._column)
        if found is None:
            self._lines += text.count("\n")
            self._column = column
            return
        line = self._lines + text.count("\n", 0, end) + 1
        self.bad_byte = f"byte 0x{ord(text[end]) - 0xDC00:02x} at line {line}, column {column + 1}"

    def first_bad_byte(self) -> str:
        """``bad_byte`` of the whole stream, reading on until one is found; for an error
        message, once the text is no longer needed."""
        while not (self.bad_byte or self.done):
            self.read()
        return self.bad_byte


def _first_bad_byte(path: Path) -> str:
    """The note on a file's first undecodable byte, read only as far as that byte."""
    with open(path, "rb") as handle:
        return _Utf8Chunks(handle).first_bad_byte()


class _RecordObject(dict):
    """A JSON object that remembers which keys appeared more than once.

    ``json`` silently keeps the last value of a repeated key; for ``chosen``/``rejected`` (or
    a message's ``role``/``content``) that could train the opposite preference of what the
    owner wrote, so the validator refuses it.
    """

    repeated_keys: frozenset[str] = frozenset()


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = _RecordObject(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj.repeated_keys = frozenset(k for k, _ in pairs if k in seen or seen.add(k))
    return obj


_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs)
"""One shared decoder: ``json.loads`` with a hook builds a new decoder per call (2x slower)."""


def _parse_json(shown: str, text: str, line: int | None, bad_byte: str = "") -> Any:
    """``json.loads`` with failures reported briefly at a file position, not as a traceback.

    ``bad_byte`` names an undecodable byte in ``text``: outside a string it is the likely
    cause of the failure, so the message says so.
    """
    note = f"; not valid UTF-8: {bad_byte}" if bad_byte else ""
    try:
        return _JSON_DECODER.decode(text)
    except json.JSONDecodeError as exc:
        at = line if line is not None else exc.lineno
        raise DataError(
            shown, f"invalid JSON: {exc.msg} (column {exc.colno}){note}", line=at
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. huge integers, absurd nesting
        raise DataError(shown, f"invalid JSON: {one_line(str(exc))}{note}", line=line) from None


def _jsonl_records(shown: str, handle: BinaryIO) -> Iterator[Record]:
    """One JSON value per line; blank lines are skipped. Streams, so large files are fine."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM):]
        text, bad = _decode(raw)
        if text.strip():
            where = "" if bad is None else f"byte 0x{raw[bad]:02x} at column {bad + 1}"
            yield number, _parse_json(shown, text, number, where)


def _read_jsonl(shown: str, path: Path, purpose: str) -> Iterator[Record]:
    """A JSONL file (:func:`_jsonl_records`)."""
    with open(path, "rb") as handle:
        yield from _jsonl_records(shown, handle)


def _gzip_failure(shown: str, exc: BaseException) -> DataError:
    return DataError(shown, f"not a readable gzip file: {one_line(str(exc)) or exc.__class__.__name__}")


def _read_jsonl_gz(shown: str, path: Path, purpose: str) -> Iterator[Record]:
    """A gzip-compressed JSONL file, decompressed as it streams; line numbers are those of
    the decompressed text."""
    try:
        with gzip.open(path, "rb") as handle:
            yield from _jsonl_records(shown, handle)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _gzip_failure(shown, exc) from None


_JSON_SPACE = re.compile(r"[ \t\n\r]*")
"""JSON's whitespace (the stdlib's ``json.decoder.WHITESPACE``)."""
def _past_space(text: str, pos: int) -> int:
    """Where the JSON whitespace at ``text[pos:]`` ends."""
    space = _JSON_SPACE.match(text, pos)
    return space.end() if space else pos  # it always matches, if only the empty string


_JSON_NEXT_ELEMENT = re.compile(r"[ \t\n\r]*,[ \t\n\r]*(?=[^ \t\n\r\]])")
"""Between two array elements, the next one begun in the text read so far: the common case,
one match instead of the general steps."""
_JSON_LOOKAHEAD = 32
"""A value parsed, or a decoding error met, this close to the end of the text read so far may
be cut by it (``2.`` of ``2.5``, ``tru``, ``"\\u12``): more is read before either is believed.
The longest such token is a ``\\uXXXX\\uXXXX`` pair, 12 characters."""
_SYNTAX_DECODER = json.JSONDecoder()
"""For the syntax pass over a JSON document: the same errors, without building records."""


def _trailing_comma(close: str) -> tuple[str, bool]:
    """The stdlib's verdict on a comma before ``close`` (``]`` or ``}``): its message, and
    whether it points at the comma (Python 3.13+) rather than where the next value or key
    should be, the error :class:`_JsonText` meets by itself."""
    document = "[0,]" if close == "]" else '{"k": 0,}'
    try:
        _SYNTAX_DECODER.decode(document)
    except json.JSONDecodeError as exc:
        return exc.msg, document[exc.pos] == ","
    return "", False  # not reached: no Python accepts a trailing comma


_TRAILING_COMMA = {close: _trailing_comma(close) for close in "]}"}


def _maybe_cut(exc: json.JSONDecodeError, length: int) -> bool:
    """Whether a decoding error may be the end of the text read so far cutting a value."""
    return exc.msg.startswith("Unterminated string") or exc.pos > length - _JSON_LOOKAHEAD


class _JsonText:
    """A JSON document read a chunk at a time, for :func:`_json_records`.

    Arrays and the top-level object are walked here; each element (each member's value) is
    parsed by ``decoder`` (``raw_decode``), the buffer growing only while one is incomplete,
    so memory follows the largest element, not the file. ``text[pos:]`` is what is still
    unread; consumed text is dropped whenever more is read, its newlines counted, so errors
    keep naming the line and column of the whole file. Messages and positions are the
    stdlib's, as when the document was parsed whole.
    """

    def __init__(self, shown: str, handle: io.BufferedIOBase, decoder: json.JSONDecoder) -> None:
        self.shown = shown
        self._chunks = _Utf8Chunks(handle)
        self._decoder = decoder
        self.text = ""
        self.pos = 0
        self._lines = 0  # newlines in the dropped text
        self._column = 0  # characters after the last of them

    def where(self, pos: int) -> tuple[int, int]:
        """The file's line and column (1-based, in characters, as the stdlib counts) of ``pos``."""
        newline = self.text.rfind("\n", 0, pos)
        line = self._lines + self.text.count("\n", 0, pos) + 1
        return line, pos - newline if newline >= 0 else self._column + pos + 1

    def more(self, least: int = 1) -> bool:
        """Drop the consumed text and read at least ``least`` characters more (fewer at the
        end of the file); False when nothing was left. Positions into ``text`` shift."""
        line, column = self.where(self.pos)
        self._lines, self._column = line - 1, column - 1
        pieces, added = [self.text[self.pos:]], 0
        while added < least and not self._chunks.done:
            pieces.append(self._chunks.read())
            added += len(pieces[-1])
        self.text, self.pos = "".join(pieces), 0
        return added > 0

    def error(self, message: str, place: int | tuple[int, int]) -> DataError:
        """A syntax error at ``place`` (a position in ``text``, or a line and column found
        before), worded as for a document parsed whole."""
        line, column = self.where(place) if isinstance(place, int) else place
        return DataError(self.shown, f"invalid JSON: {message} (column {column}){self._note()}", line=line)

    def _note(self) -> str:
        """The first undecodable byte of the file, as parsing it whole named it; reads on."""
        bad_byte = self._chunks.first_bad_byte()
        return f"; not valid UTF-8: {bad_byte}" if bad_byte else ""

    def skip_space(self) -> str:
        """Move past whitespace; return the next character, ``""`` at the end of the file."""
        while True:
            self.pos = _past_space(self.text, self.pos)
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def only_space_left(self) -> bool:
        """Whether the rest is whitespace to ``str.strip`` (``\\f``, ``\\v``, ...), which left
        a document empty when it was parsed whole."""
        while not self.text[self.pos:].strip():
            self.pos = len(self.text)
            if not self.more():
                return True
        return False

    def value(self) -> Any:
        """The value at ``pos``, read on while it may be cut off; ``pos`` ends past it."""
        failure = ""
        while True:
            try:
                value, end = self._decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                if _maybe_cut(exc, len(self.text)) and not self._chunks.done:
                    self.more(len(self.text) - self.pos)  # doubling: a long value is parsed O(1) times
                    continue
                raise self.error(exc.msg, exc.pos) from None
            except (ValueError, RecursionError) as exc:  # e.g. huge integers, absurd nesting
                if one_line(str(exc)) != failure and not self._chunks.done:
                    failure = one_line(str(exc))  # a cut integer's digit count is not yet its own
                    self.more(len(self.text) - self.pos)
                    continue
                raise DataError(self.shown, f"invalid JSON: {one_line(str(exc))}{self._note()}") from None
            if end <= len(self.text) - _JSON_LOOKAHEAD or self._chunks.done:
                self.pos = end
                return value
            self.more()  # a number may go on past the text read so far (``2.`` of ``2.5``)

    def array(self) -> Iterator[Any]:
        """The elements of the array at ``pos``, each parsed when asked for; ``pos`` ends past
        its ``]``."""
        self.pos += 1
        if self.skip_space() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            between = _JSON_NEXT_ELEMENT.match(self.text, self.pos)
            if between is not None:
                self.pos = between.end()
                continue
            char = self.skip_space()
            self.pos += 1
            if char == "]":
                return
            if char != ",":
                raise self.error("Expecting ',' delimiter", self.pos - 1)
            self._after_comma("]")

    def members(self) -> Iterator[str]:
        """The keys of the object at ``pos``; after each, ``pos`` is at its value, which the
        caller consumes (:meth:`array`, :meth:`skip`) before asking for the next key."""
        self.pos += 1
        char = self.skip_space()
        if char == "}":
            self.pos += 1
            return
        while True:
            if char != '"':
                raise self.error("Expecting property name enclosed in double quotes", self.pos)
            key = self.value()
            if self.skip_space() != ":":
                raise self.error("Expecting ':' delimiter", self.pos)
            self.pos += 1
            self.skip_space()
            yield key
            char = self.skip_space()
            self.pos += 1
            if char == "}":
                return
            if char != ",":
                raise self.error("Expecting ',' delimiter", self.pos - 1)
            char = self._after_comma("}")

    def _after_comma(self, close: str) -> str:
        """Move past the whitespace after a comma; return the next character. ``close`` next
        is refused where this Python's stdlib refuses it (:func:`_trailing_comma`)."""
        message, at_comma = _TRAILING_COMMA[close]
        comma: int | tuple[int, int] = self.pos - 1
        if at_comma and _past_space(self.text, self.pos) == len(self.text):
            comma = self.where(self.pos - 1)  # reading on drops the comma: place it first
        char = self.skip_space()
        if char == close and at_comma:
            raise self.error(message, comma)
        return char

    def skip(self) -> None:
        """Consume the value at ``pos`` without keeping it (an array element by element)."""
        if self.skip_space() == "[":
            for _ in self.array():
                pass
        else:
            self.value()

    def end(self) -> None:
        """Only whitespace may follow the document."""
        if self.skip_space():
            raise self.error("Extra data", self.pos)


_TOP_LEVEL_ARRAY = -1
"""Where :func:`_find_records` finds the records of a document that is an array."""


def _json_records(shown: str, open_document: Callable[[], io.BufferedIOBase]) -> Iterator[Record]:
    """A JSON array of records, or an object wrapping it under ``"data"`` or ``"rows"``.

    Line numbers are record numbers (1-based), since the stdlib parser gives no positions
    for array elements; a syntax error names its line and column in the file.

    The document is read twice, a chunk at a time (:class:`_JsonText`), so that memory
    follows the largest record while the behaviour stays that of a document parsed whole:
    the first pass checks the syntax of all of it and finds the records, dropping every
    value, so a syntax error anywhere is reported before any record is looked at, and the
    wrapper key is chosen seeing the whole object; the second pass yields the records.
    """
    with open_document() as handle:
        member = _find_records(_JsonText(shown, handle, _SYNTAX_DECODER))
    if member is None:
        return
    with open_document() as handle:
        text = _JsonText(shown, handle, _JSON_DECODER)
        text.skip_space()
        if member != _TOP_LEVEL_ARRAY:
            for index, _key in enumerate(text.members()):
                if index == member:
                    break
                text.skip()
            text.skip_space()
        yield from enumerate(text.array(), start=1)


def _find_records(text: _JsonText) -> int | None:
    """The syntax pass of :func:`_json_records`: None for a blank document, else where the
    records are (:data:`_TOP_LEVEL_ARRAY`, or the index of the top-level object's member)."""
    first = text.skip_space()
    if not first:
        return None
    if first.isspace():  # whitespace to str.strip but not to JSON: blank, or invalid as before
        place = text.where(text.pos)
        if text.only_space_left():
            return None
        raise text.error("Expecting value", place)
    found: int | None = None
    if first == "[":
        text.skip()
        found = _TOP_LEVEL_ARRAY
    elif first == "{":
        wrappers: dict[str, tuple[int, bool]] = {}
        for index, key in enumerate(text.members()):
            if key in ("data", "rows"):  # a repeated key: the last one, as in a dict
                wrappers[key] = (index, text.skip_space() == "[")
            text.skip()
        chosen = wrappers.get("data") or wrappers.get("rows")
        found = chosen[0] if chosen and chosen[1] else None
    else:
        text.value()
    text.end()
    if found is None:
        raise DataError(
            text.shown, "expected a JSON array of records, or an object with a 'data' or 'rows' "
            "array",
        )
    return found


def _read_json(shown: str, path: Path, purpose: str) -> Iterator[Record]:
    """A JSON file (:func:`_json_records`), read a chunk at a time. One that fits in a chunk
    is read in one call, with ``Path.read_bytes`` as before (tests/test_data.py simulates a
    read failure by patching it)."""
    if path.stat().st_size > _CHUNK_BYTES:
        yield from _json_records(shown, lambda: open(path, "rb"))
        return
    data = path.read_bytes()
    yield from _json_records(shown, lambda: io.BytesIO(data))


def _read_json_gz(shown: str, path: Path, purpose: str) -> Iterator[Record]:
    """A gzip-compressed JSON file (:func:`_json_records`), decompressed as it is read."""
    try:
        yield from _json_records(shown, lambda: gzip.open(path, "rb"))
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _gzip_failure(shown, exc) from None


def _json_cell(cell: str) -> Any:
    """A CSV cell parsed as JSON when it looks like a JSON array, else None."""
    text = cell.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        return _JSON_DECODER.decode(text)
    except (ValueError, RecursionError):
        return None


def _csv_json_cell(shown: str, line: int, name: str, cell: str, first: int, probe: str) -> Any:
    """A cell of a conversational CSV, parsed as JSON; an empty cell is an empty conversation."""
    if not cell.strip():
        return []
    try:
        return _JSON_DECODER.decode(cell)
    except json.JSONDecodeError as exc:
        problem = f"{exc.msg} (character {exc.pos + 1} of the cell)"
    except (ValueError, RecursionError) as exc:
        problem = one_line(str(exc), 120)
    raise DataError(
        shown, f"invalid JSON: {problem}; the {probe} cell of the first data row (line {first}) is a "
        "JSON list of messages, so every prompt, chosen and rejected cell must be JSON",
        line=line, field=name,
    )


def _read_csv(shown: str, path: Path, purpose: str) -> Iterator[Record]:
    """A CSV with a header naming the fields; extra columns are ignored, ragged rows are not.

    The line reported is where the record starts in the file (header = line 1), which is the
    data-row number + 1 unless quoted cells span lines or blank lines are present. A row with
    more or fewer cells than the header is an error: it usually means an unquoted comma or
    quote shifted the cells, and guessing would train on misaligned text.

    Cells are text. A CSV is conversational when the first data row's chosen cell (the
    prompt cell in a file of prompts only) is a JSON array of message objects; then every
    prompt/chosen/rejected cell is parsed as JSON, and one that does not parse is an error at
    its line. In a text CSV, a chosen/rejected cell holding a JSON list of messages is passed
    on as such, so a file that changes layout half-way is refused instead of trained on as
    JSON text.
    """
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    # A text stream (newline="", as the csv module wants) rather than the whole text: memory
    # follows the longest row. Undecodable bytes stay in their cells (module docstring). The
    # BOM is skipped by hand: "utf-8-sig" drops a file that is only part of one.
    with open(path, "rb") as raw:
        if raw.peek(len(_UTF8_BOM)).startswith(_UTF8_BOM):
            raw.read(len(_UTF8_BOM))
        stream = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        yield from _csv_records(shown, path, csv.reader(stream), purpose)


def _csv_records(shown: str, path: Path, reader: Any, purpose: str) -> Iterator[Record]:
    """The rows of :func:`_read_csv`'s ``reader`` as records; ``path`` is read again only
    to name an undecodable byte in the header."""
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        if not all(map(_is_utf8_text, header)):
            raise DataError(shown, f"header is not valid UTF-8: {_first_bad_byte(path)}", line=1)
        fields = _pick_columns(shown, header, 1, purpose)
        for name in fields:
            if header.count(name) > 1:
                raise DataError(shown, "column appears more than once in the header", line=1, field=name)
        positions = {name: header.index(name) for name in fields}
        probe = "chosen" if "chosen" in positions else "prompt"
        conversational: bool | None = None
        first = 0
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                return
            if not row:  # csv yields [] for a blank line
                continue
            if len(row) != len(header):
                shape = f"row has {len(row)} cells, the header has {len(header)} columns"
                missing = next((n for n, i in positions.items() if i >= len(row)), None)
                if missing is not None:
                    raise DataError(shown, f"missing ({shape})", line=start, field=missing)
                raise DataError(shown, f"{shape} (an unquoted comma or quote?)", line=start)
            cells = {n: row[i] for n, i in positions.items()}
            if conversational is None:
                first, conversational = start, bool(_kind(_json_cell(cells[probe])))
            if conversational:
                yield start, {n: _csv_json_cell(shown, start, n, v, first, probe) for n, v in cells.items()}
                continue
            for name in RESPONSES:
                if name in cells:
                    parsed = _json_cell(cells[name])
                    if parsed is not None and _kind(parsed):
                        cells[name] = parsed
            yield start, cells
    except csv.Error as exc:
        raise DataError(shown, f"invalid CSV: {one_line(str(exc))}", line=reader.line_num) from None


def _read_parquet(shown: str, path: Path, purpose: str) -> Iterator[Record]:
    """A Parquet file with string or message-list columns, read in batches of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        fields = _pick_columns(shown, schema.names, None, purpose,
                               usable=lambda name: _usable_column(schema.field(name).type))
        _require_text_columns(shown, schema, fields)
        batches = parquet.iter_batches(batch_size=_ARROW_BATCH_ROWS, columns=list(fields))
        yield from _number_rows(map(_arrow_rows, batches))
    except pa.ArrowException as exc:
        raise DataError(shown, f"not a readable Parquet file: {one_line(str(exc))}") from None


def _read_datasets_dir(shown: str, path: Path, purpose: str, split: str | None) -> Iterator[Record]:
    """A directory from ``save_to_disk``: a ``Dataset``, or a ``DatasetDict``'s ``split``
    (``train`` when none is given)."""
    import datasets
    import pyarrow as pa

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a foreign dir
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            # It is a save_to_disk directory, just not a loadable one: say so, not "foreign".
            # (datasets 5.2 saves an empty Dataset with no data file and cannot load it back.)
            raise DataError(
                shown, f"dataset saved with save_to_disk cannot be loaded "
                f"({exc.__class__.__name__}: {one_line(str(exc), 120)}); is it empty?",
            ) from None
        raise DataError(
            shown,
            f"directory is not a dataset saved with save_to_disk ({exc.__class__.__name__}); "
            f"supported: {', '.join(SUPPORTED_FORMATS)}",
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(map(_show, loaded)) or "none"
        if split is None and "train" not in loaded:
            raise DataError(
                shown, f"DatasetDict has no 'train' split (splits: {splits}); "
                "pick one with `split` (NAME, or PATH:SPLIT)",
            )
        if split is not None and split not in loaded:
            raise DataError(shown, f"DatasetDict has no split {split!r} (splits: {splits})")
        loaded = loaded["train" if split is None else split]
    elif split is not None:
        raise DataError(shown, f"split {split!r} given, but the directory holds a single Dataset, "
                               "not a DatasetDict with splits")
    schema = loaded.data.schema
    fields = _pick_columns(shown, loaded.column_names, None, purpose,
                           usable=lambda name: _usable_column(schema.field(name).type))
    _require_text_columns(shown, schema, fields)
    # Arrow batches rather than Python rows: the same decoding as Parquet, undecodable bytes
    # included, and the dataset's row selection (indices mapping) still applies.
    table = loaded.with_format("arrow").select_columns(list(fields))
    try:
        batches = table.iter(batch_size=_ARROW_BATCH_ROWS)
        yield from _number_rows(
            rows for batch in batches for rows in map(_arrow_rows, batch.to_batches())
        )
    except pa.ArrowException as exc:
        raise DataError(shown, f"dataset files are not readable: {one_line(str(exc))}") from None


def _arrow_rows(batch: Any) -> list[dict[str, Any]]:
    """Rows of an Arrow record batch; undecodable string bytes become surrogates, not errors.

    Arrow trusts writers to store valid UTF-8 but does not check on read; ``to_pylist`` then
    fails on the whole batch. The slow path views the text as bytes and decodes each value
    with ``surrogateescape`` (inside message lists too), so only the affected rows are
    dropped (``invalid_utf8``).
    """
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        pass
    columns = {name: _arrow_values(column) for name, column in zip(batch.schema.names, batch.columns)}
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def _arrow_values(column: Any) -> list[Any]:
    """``column.to_pylist()``, but strings (at any depth of lists and structs) decoded with
    ``surrogateescape``."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = column.type
    binary = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary(),
              pa.string_view(): pa.binary_view()}.get(kind)
    if binary is not None:
        return [None if v is None else v.decode("utf-8", "surrogateescape")
                for v in column.view(binary).to_pylist()]
    if _is_list_type(kind):
        items = _arrow_values(column.flatten())  # the values of the non-null lists, in order
        values: list[Any] = []
        position = 0
        for length in column.value_lengths().to_pylist():
            if length is None:
                values.append(None)
            else:
                values.append(items[position:position + length])
                position += length
        return values
    if pa.types.is_struct(kind):
        names = [kind.field(i).name for i in range(kind.num_fields)]
        children = [_arrow_values(column.field(i)) for i in range(kind.num_fields)]
        valid = column.is_valid().to_pylist()
        return [dict(zip(names, values)) if ok else None for ok, *values in zip(valid, *children)]
    return column.to_pylist()


def _number_rows(batches: Iterable[list[dict[str, Any]]]) -> Iterator[Record]:
    """Number rows across batches from 1, the record numbers reported for columnar data."""
    number = 0
    for rows in batches:
        for row in rows:
            number += 1
            yield number, row
