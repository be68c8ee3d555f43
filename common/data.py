"""Loading and saving a data owner's private preference dataset.

A preference dataset is a list of ``(prompt, chosen, rejected)`` string triples, the input of
DPO fine-tuning. Owners bring their data in whatever shape they have (JSONL, JSON, CSV,
Parquet, a ``datasets`` directory), so each format gets a small reader that only turns the
file into ``(line_number, record)`` pairs; one shared validator then decides what a valid
example is. That keeps the rules identical across formats and every error message pointing at
the exact file and line, because a valuation run that dies on row 40 312 of a private file
with a traceback is useless to an owner who cannot share the file for debugging.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from common.errors import DataError

FIELDS: tuple[str, ...] = ("prompt", "chosen", "rejected")
"""The required fields of every record, in canonical order."""

DATASETS_DIR = "directory written by datasets' save_to_disk"

SUPPORTED_FORMATS: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet", DATASETS_DIR)
"""What :func:`load_preferences` accepts; listed verbatim when a format is not supported."""

_ARROW_BATCH_ROWS = 4096
_UTF8_BOM = b"\xef\xbb\xbf"

Record = tuple[int | None, Any]
"""A ``(line_number, raw_record)`` pair produced by a format reader."""


@dataclass(frozen=True)
class PreferenceExample:
    """One DPO training example: a prompt, the preferred and the dispreferred response."""

    prompt: str
    chosen: str
    rejected: str

    def as_dict(self) -> dict[str, str]:
        """The example as a plain record, in the shape every supported format stores."""
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


@dataclass(frozen=True)
class LoadReport:
    """What happened while loading, so the CLI can tell the owner how much data was used.

    ``dropped`` counts silently removed rows by reason (currently only ``"duplicate"``, which
    is always present, possibly 0); invalid rows are never dropped, they are errors.
    """

    path: str
    rows_read: int
    kept: int
    dropped: dict[str, int]


# --------------------------------------------------------------------------------------------
# Public API


def load_preferences(
    path: str | os.PathLike[str], *, drop_duplicates: bool = True
) -> tuple[list[PreferenceExample], LoadReport]:
    """Load and validate a preference dataset; raise :class:`DataError` on any user mistake.

    The format is chosen by the extension (or "is a directory" for ``datasets``), never by
    sniffing content, so a misnamed file fails loudly instead of being half-parsed.
    Exact duplicate rows are dropped when ``drop_duplicates`` because they would silently
    double an example's weight in training and in its owner's valuation.
    """
    shown = os.fspath(path)
    records = _read_records(shown, Path(shown))
    examples: list[PreferenceExample] = []
    seen: set[PreferenceExample] = set()
    rows_read = duplicates = 0
    for line, record in records:
        rows_read += 1
        example = validate_record(shown, line, record)
        if drop_duplicates:
            if example in seen:
                duplicates += 1
                continue
            seen.add(example)
        examples.append(example)
    if rows_read == 0:
        raise DataError(shown, "empty file: no rows")
    report = LoadReport(shown, rows_read, len(examples), {"duplicate": duplicates})
    return examples, report


def load_prompts(path: str | os.PathLike[str]) -> list[str]:
    """Load prompts for generation from any supported format: each record needs ``prompt``.

    Preference files qualify too (their other fields are ignored), so the evaluation set's
    prompts can be decoded without a separate file.
    """
    shown = os.fspath(path)
    prompts = []
    for line, record in _read_records(shown, Path(shown), fields=("prompt",)):
        if not isinstance(record, Mapping):
            raise DataError(shown, f"record must be an object with a prompt field, got {_type_name(record)}",
                            line=line)
        prompts.append(_validate_field(shown, line, record, "prompt"))
    if not prompts:
        raise DataError(shown, "empty file: no rows")
    return prompts


def save_preferences_jsonl(
    examples: Iterable[PreferenceExample], path: str | os.PathLike[str]
) -> None:
    """Write examples as UTF-8 JSONL, atomically.

    The temp file lives in the target directory so ``os.replace`` is a same-filesystem rename:
    a crash or a full disk leaves either the old file or the new one, never a truncated one
    that a later run would load as a smaller dataset. Non-ASCII text is kept readable
    (``ensure_ascii=False``); JSON escapes newlines, so one example is always one line.
    """
    target = Path(os.fspath(path))
    try:
        tmp, handle = _create_temp_beside(target)
    except OSError as exc:
        raise DataError(os.fspath(path), f"cannot write: {exc.strerror or exc}") from exc
    try:
        with handle as out:
            for example in examples:
                out.write(json.dumps(example.as_dict(), ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DataError(os.fspath(path), f"cannot write: {exc.strerror or exc}") from exc
        raise


def _create_temp_beside(target: Path) -> tuple[Path, TextIO]:
    """Open a fresh temp file next to ``target``.

    ``os.open`` with mode 0o666 (rather than ``tempfile``'s 0o600) so the final file gets the
    same umask-derived permissions a plain ``open`` would have given it.
    """
    while True:
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return tmp, open(fd, "w", encoding="utf-8", newline="\n")


def validate_record(path: str, line: int | None, record: Any) -> PreferenceExample:
    """Turn one raw record into an example, or raise a :class:`DataError` saying why not.

    This is the single definition of a valid example for every format. Values are kept
    exactly as given (not stripped): whitespace can be meaningful to a tokenizer, and the
    owner's data should reach training unchanged.
    """
    if not isinstance(record, Mapping):
        raise DataError(
            path,
            f"record must be an object with fields {', '.join(FIELDS)}, "
            f"got {_type_name(record)}",
            line=line,
        )
    values = [_validate_field(path, line, record, name) for name in FIELDS]
    example = PreferenceExample(*values)
    if example.chosen.strip() == example.rejected.strip():
        raise DataError(
            path, "chosen and rejected are identical: the pair expresses no preference",
            line=line,
        )
    return example


# --------------------------------------------------------------------------------------------
# Validation helpers


def _validate_field(path: str, line: int | None, record: Mapping[str, Any], name: str) -> str:
    """Return ``record[name]`` if it is a usable string; raise naming the field otherwise."""
    if name not in record:
        raise DataError(path, "missing", line=line, field=name)
    value = record[name]
    if not isinstance(value, str):
        raise DataError(
            path, f"must be a string, got {_type_name(value)}", line=line, field=name
        )
    if not value.strip():
        raise DataError(path, "empty or whitespace-only", line=line, field=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON "\udXXX" escapes can smuggle lone surrogates in; they would crash tokenizers
        # and our own JSONL writer much later, far from the offending line.
        raise DataError(
            path, "contains invalid Unicode (unpaired surrogate)", line=line, field=name
        ) from None
    return value


_JSON_TYPE_NAMES = {
    type(None): "null", bool: "boolean", int: "number", float: "number",
    list: "array", dict: "object", str: "string",
}


def _type_name(value: Any) -> str:
    """A type name the owner recognises from their file (JSON names where they apply)."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _require_columns(path: str, columns: Sequence[str], line: int | None,
                     fields: Sequence[str] = FIELDS) -> None:
    """Fail once, at the header/schema, when a tabular file lacks a required column.

    Reporting it per row would name row 1 for what is really a file-level mistake.
    """
    for name in fields:
        if name not in columns:
            raise DataError(
                path, f"missing column (columns found: {', '.join(map(str, columns)) or 'none'})",
                line=line, field=name,
            )


# --------------------------------------------------------------------------------------------
# Format dispatch and readers: each yields (line_number, record) pairs and validates nothing.


def _read_records(shown: str, path: Path, fields: Sequence[str] = FIELDS) -> Iterator[Record]:
    """Pick the reader for ``path``; check existence and format before any parsing.

    ``fields`` are the columns tabular formats must have (and the only ones they read).
    """
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except OSError as exc:
        raise DataError(shown, f"cannot access: {exc.strerror or exc}") from exc
    if not exists:
        raise DataError(shown, "no such file or directory")
    if is_dir:
        return _guard_io(shown, _read_datasets_dir(shown, path, fields))
    suffix = path.suffix.lower()
    readers = {
        ".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet,
    }
    reader = readers.get(suffix)
    if reader is None:
        found = f"'{suffix}'" if suffix else "no extension"
        raise DataError(
            shown, f"unsupported format ({found}); supported: {', '.join(SUPPORTED_FORMATS)}"
        )
    return _guard_io(shown, reader(shown, path, fields))


def _guard_io(shown: str, records: Iterator[Record]) -> Iterator[Record]:
    """Turn OS-level read failures (permissions, I/O errors) into a :class:`DataError`."""
    try:
        yield from records
    except OSError as exc:
        raise DataError(shown, f"cannot read: {exc.strerror or exc}") from exc


def _utf8_error(shown: str, line: int, raw: bytes, offset: int) -> DataError:
    """The error for a bad byte at ``offset`` within line ``line`` (whose bytes are ``raw``)."""
    return DataError(
        shown, f"not valid UTF-8: byte 0x{raw[offset]:02x} at column {offset + 1}", line=line
    )


def _decode_line(shown: str, line: int, raw: bytes) -> str:
    """Decode one line as strict UTF-8, reporting the line and column of a bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _utf8_error(shown, line, raw, exc.start) from None


def _read_text(shown: str, path: Path) -> str:
    """Read a whole file as strict UTF-8 (BOM tolerated); a bad byte is reported by line.

    Whole-file decoding (rather than a text-mode stream) is what lets us map the failing
    byte offset back to a line number.
    """
    data = path.read_bytes()
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, line_start) + 1
        raise _utf8_error(shown, line, data[line_start:], exc.start - line_start) from None


def _parse_json(shown: str, text: str, line: int | None) -> Any:
    """``json.loads`` with failures reported briefly at a file position, not as a traceback."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = line if line is not None else exc.lineno
        raise DataError(
            shown, f"invalid JSON: {exc.msg} (column {exc.colno})", line=at
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. huge integers, absurd nesting
        raise DataError(shown, f"invalid JSON: {exc}", line=line) from None


def _read_jsonl(shown: str, path: Path, fields: Sequence[str] = FIELDS) -> Iterator[Record]:
    """One JSON value per line; blank lines are skipped. Streams, so large files are fine."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM):]
            text = _decode_line(shown, number, raw)
            if text.strip():
                yield number, _parse_json(shown, text, number)


def _read_json(shown: str, path: Path, fields: Sequence[str] = FIELDS) -> Iterator[Record]:
    """A JSON array of records, or an object wrapping it under ``"data"`` or ``"rows"``.

    Line numbers are record numbers (1-based), since the stdlib parser gives no positions
    for array elements.
    """
    text = _read_text(shown, path)
    if not text.strip():
        return
    document = _parse_json(shown, text, None)
    if isinstance(document, dict):
        key = next((k for k in ("data", "rows") if k in document), None)
        document = document[key] if key is not None else None
    if not isinstance(document, list):
        raise DataError(
            shown, "expected a JSON array of records, or an object with a 'data' or 'rows' "
            "array",
        )
    yield from enumerate(document, start=1)


def _read_csv(shown: str, path: Path, fields: Sequence[str] = FIELDS) -> Iterator[Record]:
    """A CSV with a header naming the fields; extra columns are ignored.

    The line reported is where the record starts in the file (header = line 1), which is the
    data-row number + 1 unless quoted cells span lines or blank lines are present.
    """
    reader = csv.reader(io.StringIO(_read_text(shown, path), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        _require_columns(shown, header, line=1, fields=fields)
        positions = {name: header.index(name) for name in fields}
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                return
            if row:  # csv yields [] for a blank line
                yield start, {n: row[i] for n, i in positions.items() if i < len(row)}
    except csv.Error as exc:
        raise DataError(shown, f"invalid CSV: {exc}", line=reader.line_num) from None


def _read_parquet(shown: str, path: Path, fields: Sequence[str] = FIELDS) -> Iterator[Record]:
    """A Parquet file with prompt/chosen/rejected columns, read in batches of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        _require_columns(shown, parquet.schema_arrow.names, line=None, fields=fields)
        batches = parquet.iter_batches(batch_size=_ARROW_BATCH_ROWS, columns=list(fields))
        yield from _number_rows(batch.to_pylist() for batch in batches)
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        raise DataError(shown, f"not a readable Parquet file: {exc}") from None


def _read_datasets_dir(shown: str, path: Path, fields: Sequence[str] = FIELDS) -> Iterator[Record]:
    """A directory from ``Dataset.save_to_disk`` (a ``DatasetDict`` must have a train split)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a foreign dir
        raise DataError(
            shown,
            f"directory is not a dataset saved with save_to_disk ({exc.__class__.__name__}); "
            f"supported: {', '.join(SUPPORTED_FORMATS)}",
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(
                shown, f"DatasetDict has no 'train' split (splits: {', '.join(loaded) or 'none'})"
            )
        loaded = loaded["train"]
    _require_columns(shown, loaded.column_names, line=None, fields=fields)
    table = loaded.with_format(None).select_columns(list(fields))
    yield from _number_rows(
        _columns_to_rows(batch) for batch in table.iter(batch_size=_ARROW_BATCH_ROWS)
    )


def _columns_to_rows(batch: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Transpose a column batch (``{name: values}``) into row records."""
    names = list(batch)
    return [dict(zip(names, values)) for values in zip(*(batch[n] for n in names))]


def _number_rows(batches: Iterable[list[dict[str, Any]]]) -> Iterator[Record]:
    """Number rows across batches from 1, the record numbers reported for columnar data."""
    number = 0
    for rows in batches:
        for row in rows:
            number += 1
            yield number, row
