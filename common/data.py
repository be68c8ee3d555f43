"""Loading and saving a data owner's private preference dataset.

A preference dataset is a list of ``(prompt, chosen, rejected)`` string triples, the input of
DPO fine-tuning. Owners bring their data in whatever shape they have (JSONL, JSON, CSV,
Parquet, a ``datasets`` directory), so each format gets a small reader that only turns the
file into ``(line_number, record)`` pairs; one shared validator then decides what a valid
example is. That keeps the rules identical across formats and every error message pointing at
the exact file and line, because a valuation run that dies on row 40 312 of a private file
with a traceback is useless to an owner who cannot share the file for debugging.

Two kinds of bad input are told apart:

- *Structural* mistakes mean the file does not say what the owner thinks it says (it does not
  parse, a field is missing or is not a string, a CSV row is ragged, a key appears twice).
  Guessing would train on misread data, so they raise one :class:`DataError` naming file,
  line and field, before anything is trained or written.
- *Row-level quality* problems leave a well-formed row that carries no usable preference: a
  field that is not valid UTF-8 text, an empty field, chosen equal to rejected, an exact
  duplicate. Real datasets have a few of these; failing a 100 000-row file for one of them
  helps nobody, so such rows are dropped and counted by reason (:data:`DROP_REASONS`), and the
  counts travel to the coordinator's report. A file whose every row is dropped is an error.

Text formats are decoded with ``surrogateescape`` so that a byte that is not UTF-8 stays
inside the value it belongs to: in a field it drops that row (``invalid_utf8``), anywhere
else (JSON syntax, a CSV header) it is a structural error naming the byte.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from common.errors import DataError

FIELDS: tuple[str, ...] = ("prompt", "chosen", "rejected")
"""The required fields of every record, in canonical order."""

DATASETS_DIR = "directory written by datasets' save_to_disk"

SUPPORTED_FORMATS: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet", DATASETS_DIR)
"""What :func:`load_preferences` accepts; listed verbatim when a format is not supported."""

DROP_REASONS: tuple[str, ...] = ("invalid_utf8", "empty_field", "chosen_equals_rejected", "duplicate")
"""Why a well-formed row can be dropped, in the order they are checked (a row counts once).

``invalid_utf8``: a field holds bytes that are not UTF-8 (or, in JSON, an unpaired surrogate
escape such as ``"\\udc80"``), which tokenizers cannot take. ``empty_field``: a field is empty
or whitespace-only. ``chosen_equals_rejected``: the responses are equal once surrounding
whitespace is ignored, so the pair expresses no preference. ``duplicate``: an exact repeat of
an earlier kept ``(prompt, chosen, rejected)``, which would double that example's weight.
"""

_ARROW_BATCH_ROWS = 4096
_UTF8_BOM = b"\xef\xbb\xbf"
_LINES_SHOWN = 3
"""How many line numbers per drop reason a summary names (enough to find the pattern)."""
_CSV_FIELD_LIMIT = 2**31 - 1
"""The csv module refuses cells over 128 KiB; a long cell is a length problem, handled later."""

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


def load_preferences(
    path: str | os.PathLike[str], *, drop_duplicates: bool = True
) -> tuple[list[PreferenceExample], LoadReport]:
    """Load and validate a preference dataset; raise :class:`DataError` on any user mistake.

    The format is chosen by the extension (or "is a directory" for ``datasets``), never by
    sniffing content, so a misnamed file fails loudly instead of being half-parsed.
    Structural mistakes raise; rows with a quality problem are dropped and counted (module
    docstring). ``drop_duplicates=False`` keeps exact duplicates (the other reasons still
    apply), for callers that need the file's rows one to one.
    """
    shown = os.fspath(path)
    examples: list[PreferenceExample] = []
    seen: set[PreferenceExample] = set()
    counts = dict.fromkeys(DROP_REASONS, 0)
    lines: dict[str, list[int]] = {}
    rows_read = 0
    for line, record in _read_records(shown, Path(shown)):
        rows_read += 1
        example = validate_record(shown, line, record)
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
        raise DataError(shown, f"no usable examples: {dropped} ({report.describe_drops()})")
    return examples, report


def load_prompts(path: str | os.PathLike[str]) -> list[str]:
    """Load prompts for generation from any supported format: each record needs ``prompt``.

    Preference files qualify too (their other fields are ignored), so the evaluation set's
    prompts can be decoded without a separate file. Prompts are few and chosen by the
    coordinator, so a bad one is an error rather than a silent drop.
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

    This is the single structural definition of an example for every format: an object whose
    three fields are strings. Values are kept exactly as given (not stripped): whitespace can
    be meaningful to a tokenizer, and the owner's data should reach training unchanged.
    Quality problems of a well-formed example are :func:`drop_reason`'s business.
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
    if not all(map(_is_utf8_text, values)):
        return "invalid_utf8"
    if not all(value.strip() for value in values):
        return "empty_field"
    if example.chosen.strip() == example.rejected.strip():
        return "chosen_equals_rejected"
    return None


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


def _validate_field(path: str, line: int | None, record: Mapping[str, Any], name: str) -> str:
    """Return ``record[name]`` if it is a usable string; raise naming the field otherwise."""
    if name not in record:
        raise DataError(path, "missing", line=line, field=name)
    value = record[name]
    if not isinstance(value, str):
        raise DataError(
            path, f"must be a string, got {_type_name(value)}", line=line, field=name
        )
    if not _is_utf8_text(value):
        raise DataError(path, "not valid UTF-8 text (undecodable byte or unpaired surrogate)",
                        line=line, field=name)
    if not value.strip():
        raise DataError(path, "empty or whitespace-only", line=line, field=name)
    return value


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


def _one_line(message: str, limit: int = 240) -> str:
    """A library's error message squeezed into one bounded line (some span several)."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


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


def _require_text_columns(path: str, schema: Any, fields: Sequence[str]) -> None:
    """Fail at the schema when a required Arrow column cannot hold text.

    A typed column (numbers, lists, binary) is wrong for every row at once; saying so names
    the real mistake, where a per-row check would blame row 1.
    """
    import pyarrow as pa

    for name in fields:
        kind = schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or pa.types.is_string_view(kind)):
            raise DataError(path, f"column has type {kind}, expected string", field=name)


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


def _decode(raw: bytes) -> tuple[str, int | None]:
    """Decode UTF-8, keeping undecodable bytes as surrogates; also return the first bad offset.

    Strict decoding first: it is the fast path, and it finds the offset for error messages.
    """
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", "surrogateescape"), exc.start


def _bad_byte(raw: bytes, offset: int | None) -> str:
    """``"byte 0xe9 at line 3, column 16"`` for the first undecodable byte of ``raw``."""
    if offset is None:
        return ""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    line = raw.count(b"\n", 0, line_start) + 1
    return f"byte 0x{raw[offset]:02x} at line {line}, column {offset - line_start + 1}"


def _read_text(path: Path) -> tuple[str, str]:
    """Read a whole file as UTF-8 (BOM tolerated); return the text and a note on the first
    undecodable byte (``""`` if none), for messages about a file that then fails to parse."""
    data = path.read_bytes()
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    text, bad = _decode(data)
    return text, _bad_byte(data, bad)


class _RecordObject(dict):
    """A JSON object that remembers which keys appeared more than once.

    ``json`` silently keeps the last value of a repeated key; for ``chosen``/``rejected`` that
    could train the opposite preference of what the owner wrote, so :func:`validate_record`
    refuses it.
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
        raise DataError(shown, f"invalid JSON: {_one_line(str(exc))}{note}", line=line) from None


def _read_jsonl(shown: str, path: Path, fields: Sequence[str] = FIELDS) -> Iterator[Record]:
    """One JSON value per line; blank lines are skipped. Streams, so large files are fine."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM):]
            text, bad = _decode(raw)
            if text.strip():
                where = "" if bad is None else f"byte 0x{raw[bad]:02x} at column {bad + 1}"
                yield number, _parse_json(shown, text, number, where)


def _read_json(shown: str, path: Path, fields: Sequence[str] = FIELDS) -> Iterator[Record]:
    """A JSON array of records, or an object wrapping it under ``"data"`` or ``"rows"``.

    Line numbers are record numbers (1-based), since the stdlib parser gives no positions
    for array elements.
    """
    text, bad_byte = _read_text(path)
    if not text.strip():
        return
    document = _parse_json(shown, text, None, bad_byte)
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
    """A CSV with a header naming the fields; extra columns are ignored, ragged rows are not.

    The line reported is where the record starts in the file (header = line 1), which is the
    data-row number + 1 unless quoted cells span lines or blank lines are present. A row with
    more or fewer cells than the header is an error: it usually means an unquoted comma or
    quote shifted the cells, and guessing would train on misaligned text.
    """
    text, bad_byte = _read_text(path)
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        if not all(map(_is_utf8_text, header)):
            raise DataError(shown, f"header is not valid UTF-8: {bad_byte}", line=1)
        _require_columns(shown, header, line=1, fields=fields)
        for name in fields:
            if header.count(name) > 1:
                raise DataError(shown, "column appears more than once in the header", line=1, field=name)
        positions = {name: header.index(name) for name in fields}
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
            yield start, {n: row[i] for n, i in positions.items()}
    except csv.Error as exc:
        raise DataError(shown, f"invalid CSV: {_one_line(str(exc))}", line=reader.line_num) from None


def _read_parquet(shown: str, path: Path, fields: Sequence[str] = FIELDS) -> Iterator[Record]:
    """A Parquet file with prompt/chosen/rejected string columns, read in batches of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        _require_columns(shown, schema.names, line=None, fields=fields)
        _require_text_columns(shown, schema, fields)
        batches = parquet.iter_batches(batch_size=_ARROW_BATCH_ROWS, columns=list(fields))
        yield from _number_rows(map(_arrow_rows, batches))
    except pa.ArrowException as exc:
        raise DataError(shown, f"not a readable Parquet file: {_one_line(str(exc))}") from None


def _read_datasets_dir(shown: str, path: Path, fields: Sequence[str] = FIELDS) -> Iterator[Record]:
    """A directory from ``Dataset.save_to_disk`` (a ``DatasetDict`` must have a train split)."""
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
                f"({exc.__class__.__name__}: {_one_line(str(exc), 120)}); is it empty?",
            ) from None
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
    _require_text_columns(shown, loaded.data.schema, fields)
    # Arrow batches rather than Python rows: the same decoding as Parquet, undecodable bytes
    # included, and the dataset's row selection (indices mapping) still applies.
    table = loaded.with_format("arrow").select_columns(list(fields))
    try:
        batches = table.iter(batch_size=_ARROW_BATCH_ROWS)
        yield from _number_rows(
            rows for batch in batches for rows in map(_arrow_rows, batch.to_batches())
        )
    except pa.ArrowException as exc:
        raise DataError(shown, f"dataset files are not readable: {_one_line(str(exc))}") from None


def _arrow_rows(batch: Any) -> list[dict[str, Any]]:
    """Rows of an Arrow record batch; undecodable string bytes become surrogates, not errors.

    Arrow trusts writers to store valid UTF-8 but does not check on read; ``to_pylist`` then
    fails on the whole batch. The slow path views the text as bytes and decodes each value
    with ``surrogateescape``, so only the affected rows are dropped (``invalid_utf8``).
    """
    import pyarrow as pa

    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        pass
    columns = {}
    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        binary = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary(),
                  pa.string_view(): pa.binary_view()}.get(column.type)
        if binary is None:
            columns[name] = column.to_pylist()
        else:
            columns[name] = [None if v is None else v.decode("utf-8", "surrogateescape")
                             for v in column.view(binary).to_pylist()]
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def _number_rows(batches: Iterable[list[dict[str, Any]]]) -> Iterator[Record]:
    """Number rows across batches from 1, the record numbers reported for columnar data."""
    number = 0
    for rows in batches:
        for row in rows:
            number += 1
            yield number, row
