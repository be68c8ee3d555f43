"""Tests for loading/saving preference datasets (:mod:`common.data`).

Every bad input must surface as a :class:`DataError` naming the file, the line and the
problem, because owners debug private files that we never get to see.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
from pathlib import Path

import pytest

from common.data import (
    DROP_REASONS,
    SUPPORTED_FORMATS,
    LoadReport,
    PreferenceExample,
    drop_reason,
    load_preferences,
    save_preferences_jsonl,
)
from common.errors import ConfigError, DataError, FairPoolError

EXAMPLES = [
    PreferenceExample("What is 2+2?", "4", "5"),
    PreferenceExample("Say hi in French", "Bonjour — ça va ?", "Hello"),
    PreferenceExample("multi\nline prompt", "  keeps\twhitespace ", "no"),
]
ROWS = [e.as_dict() for e in EXAMPLES]


def write_jsonl_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row(prompt: object = "p", chosen: object = "good", rejected: object = "bad") -> str:
    return json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected})


def load_error(path: Path) -> DataError:
    """The DataError loading ``path`` raises; every such message must be one line."""
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    return info.value


def no_drops(**counts: int) -> dict[str, int]:
    """A full ``LoadReport.dropped``: every reason present, 0 unless given."""
    return {reason: counts.get(reason, 0) for reason in DROP_REASONS}


# ------------------------------------------------------------------------------------------
# errors module


def test_data_error_renders_path_line_field_problem() -> None:
    err = DataError("data/clean.jsonl", "missing", line=7, field="rejected")
    assert str(err) == "data/clean.jsonl:7: field 'rejected': missing"
    assert (err.path, err.line, err.field, err.problem) == (
        "data/clean.jsonl", 7, "rejected", "missing",
    )
    assert str(DataError("x.csv", "empty file")) == "x.csv: empty file"
    assert str(DataError("x.csv", "bad", line=2)) == "x.csv:2: bad"
    assert isinstance(err, FairPoolError) and issubclass(ConfigError, FairPoolError)


def test_data_error_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(DataError("a.json", "boom", line=3, field="prompt")))
    assert str(err) == "a.json:3: field 'prompt': boom" and err.line == 3


# ------------------------------------------------------------------------------------------
# round trips, one per format


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    save_preferences_jsonl(EXAMPLES, path)
    examples, report = load_preferences(path)
    assert examples == EXAMPLES
    assert report == LoadReport(str(path), 3, 3, no_drops())
    text = path.read_text(encoding="utf-8")
    assert "Bonjour — ça va ?" in text  # ensure_ascii=False
    assert len(text.splitlines()) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left


def test_save_replaces_existing_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    save_preferences_jsonl(EXAMPLES, path)
    save_preferences_jsonl(EXAMPLES[:1], path)
    assert load_preferences(path)[0] == EXAMPLES[:1]
    assert len(list(tmp_path.iterdir())) == 1


def test_save_to_missing_directory_is_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot write"):
        save_preferences_jsonl(EXAMPLES, tmp_path / "nope" / "out.jsonl")


def test_jsonl_skips_blank_lines_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (row() + "\n\n   \n" + row("q") + "\n").encode())
    examples, report = load_preferences(path)
    assert [e.prompt for e in examples] == ["p", "q"] and report.rows_read == 2


@pytest.mark.parametrize("wrapper", [None, "data", "rows"])
def test_json_round_trip(tmp_path: Path, wrapper: str | None) -> None:
    path = tmp_path / "d.json"
    document = ROWS if wrapper is None else {wrapper: ROWS}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    assert load_preferences(path)[0] == EXAMPLES


def test_csv_round_trip_ignores_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "rejected", "prompt", "chosen"])
        writer.writeheader()
        for i, r in enumerate(ROWS):
            writer.writerow({"id": i, **r})
    assert load_preferences(path)[0] == EXAMPLES


def test_parquet_round_trip(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    table = pa.Table.from_pylist([{**r, "score": 1.0} for r in ROWS])
    pq.write_table(table, path)
    examples, report = load_preferences(path)
    assert examples == EXAMPLES and report.kept == 3


def test_datasets_dir_round_trip(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "ds"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    assert load_preferences(path)[0] == EXAMPLES


def test_datasets_dict_uses_train_split(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "dd"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
    ).save_to_disk(str(path))
    assert load_preferences(path)[0] == EXAMPLES


def test_datasets_dict_without_train_is_error(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "dd"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(path))
    err = load_error(path)
    assert "no 'train' split" in str(err) and "test" in str(err)


def test_datasets_missing_column_and_bad_type(tmp_path: Path) -> None:
    import datasets

    missing = tmp_path / "missing"
    datasets.Dataset.from_list([{"prompt": "p", "chosen": "c"}]).save_to_disk(str(missing))
    assert "field 'rejected': missing column" in str(load_error(missing))

    typed = tmp_path / "typed"
    rows = [{"prompt": "p", "chosen": "c", "rejected": 1}] * 2
    datasets.Dataset.from_list(rows).save_to_disk(str(typed))
    err = load_error(typed)
    assert str(err) == f"{typed}: field 'rejected': column has type int64, expected string"
    assert (err.line, err.field) == (None, "rejected")


def test_plain_directory_is_error(tmp_path: Path) -> None:
    (tmp_path / "junk.txt").write_text("hi")
    err = load_error(tmp_path)
    assert str(tmp_path) in str(err) and "save_to_disk" in str(err)


# ------------------------------------------------------------------------------------------
# duplicates


def test_duplicates_dropped_and_counted(tmp_path: Path) -> None:
    path = write_jsonl_lines(tmp_path / "d.jsonl", [row(), row("q"), row(), row()])
    examples, report = load_preferences(path)
    assert [e.prompt for e in examples] == ["p", "q"]
    assert (report.rows_read, report.kept, report.dropped) == (4, 2, no_drops(duplicate=2))
    assert report.dropped_lines == {"duplicate": (3, 4)}


def test_duplicates_kept_when_asked(tmp_path: Path) -> None:
    path = write_jsonl_lines(tmp_path / "d.jsonl", [row(), row()])
    examples, report = load_preferences(path, drop_duplicates=False)
    assert len(examples) == 2 and report.dropped == no_drops()


def test_near_duplicates_are_not_dropped(tmp_path: Path) -> None:
    path = write_jsonl_lines(tmp_path / "d.jsonl", [row(), row(chosen="good ")])
    assert load_preferences(path)[1].kept == 2


# ------------------------------------------------------------------------------------------
# file-level errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    assert str(load_error(path)) == f"{path}: no such file or directory"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write_jsonl_lines(tmp_path / "locked.jsonl", [row()])
    path.chmod(0)
    try:
        err = load_error(path)
    finally:
        path.chmod(0o644)
    assert str(path) in str(err) and "cannot read" in str(err)


@pytest.mark.parametrize("name", ["data.txt", "data"])
def test_unsupported_extension_lists_formats(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("x")
    message = str(load_error(path))
    assert str(path) in message and "unsupported format" in message
    assert all(fmt in message for fmt in SUPPORTED_FORMATS)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("e.jsonl", ""),
        ("e.jsonl", "\n  \n"),
        ("e.json", ""),
        ("e.json", "[]"),
        ("e.json", '{"data": []}'),
        ("e.csv", ""),
        ("e.csv", "prompt,chosen,rejected\n"),
    ],
)
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert str(load_error(path)) == f"{path}: empty file: no rows"


def test_empty_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "e.parquet"
    schema = pa.schema([(f, pa.string()) for f in ("prompt", "chosen", "rejected")])
    pq.write_table(schema.empty_table(), path)
    assert "empty file" in str(load_error(path))


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    assert "not a readable Parquet file" in str(load_error(path))


def test_json_top_level_must_be_array(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"items": []}')
    assert "expected a JSON array" in str(load_error(path))


# ------------------------------------------------------------------------------------------
# line-level errors (JSONL: physical line numbers)


def test_invalid_json_line(tmp_path: Path) -> None:
    path = write_jsonl_lines(tmp_path / "d.jsonl", [row(), row("q"), '{"prompt": "p",'])
    err = load_error(path)
    assert err.line == 3
    assert str(err).startswith(f"{path}:3: invalid JSON: ")
    assert "Traceback" not in str(err) and len(str(err)) < len(str(path)) + 120


def test_invalid_json_in_json_file_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n{"prompt": "p"},\n{oops}\n]')
    err = load_error(path)
    assert err.line == 3 and str(err).startswith(f"{path}:3: invalid JSON")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("[1, 2]", "record must be an object with fields prompt, chosen, rejected, got array"),
        ('"text"', "record must be an object with fields prompt, chosen, rejected, got string"),
        ('{"prompt": "p", "chosen": "c"}', "field 'rejected': missing"),
        ('{"chosen": "c", "rejected": "r"}', "field 'prompt': missing"),
        (row(chosen=3), "field 'chosen': must be a string, got number"),
        (row(rejected=None), "field 'rejected': must be a string, got null"),
        (row(prompt=["a"]), "field 'prompt': must be a string, got array"),
        (row(prompt={"a": 1}), "field 'prompt': must be a string, got object"),
        (row(chosen=True), "field 'chosen': must be a string, got boolean"),
        ("null", "record must be an object with fields prompt, chosen, rejected, got null"),
    ],
)
def test_bad_record_in_jsonl(tmp_path: Path, line: str, problem: str) -> None:
    path = write_jsonl_lines(tmp_path / "clean.jsonl", [row(), "", line])
    err = load_error(path)
    assert str(err).startswith(f"{path}:3: {problem}")
    assert err.line == 3


def test_invalid_json_caused_by_a_bad_byte_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes((row() + "\n").encode() + b'{"prompt": "p"}\xff\n')
    err = load_error(path)
    assert err.line == 2
    assert str(err).endswith("; not valid UTF-8: byte 0xff at column 16")

    doc = tmp_path / "d.json"
    doc.write_bytes(b'[\n' + row().encode() + b',\n\xff]')
    err = load_error(doc)
    assert err.line == 3 and str(err).endswith("not valid UTF-8: byte 0xff at line 3, column 1")


@pytest.mark.parametrize("name", ["d.jsonl", "d.json"])
def test_repeated_key_is_an_error_not_last_wins(tmp_path: Path, name: str) -> None:
    """json keeps the last value of a repeated key: for chosen/rejected that could silently
    train the opposite preference, so the record is refused."""
    record = '{"prompt": "p", "chosen": "good", "rejected": "bad", "chosen": "bad2"}'
    path = tmp_path / name
    path.write_text(f"{row()}\n{record}\n" if name.endswith(".jsonl") else f"[{row()}, {record}]")
    err = load_error(path)
    assert (err.line, err.field) == (2, "chosen") and "more than once" in str(err)


def test_repeated_unused_key_is_ignored(tmp_path: Path) -> None:
    record = '{"id": 1, "id": 2, "prompt": "p", "chosen": "a", "rejected": "b"}'
    path = write_jsonl_lines(tmp_path / "d.jsonl", [record])
    assert load_preferences(path)[1].kept == 1


# ------------------------------------------------------------------------------------------
# row-level quality problems: dropped and counted the same way in every format

GOOD_ROWS: list[dict[str, str | bytes]] = [
    {"prompt": "p1", "chosen": "good", "rejected": "bad"},
    {"prompt": "p2", "chosen": "good", "rejected": "bad"},
]
QUALITY_ROWS: list[dict[str, str | bytes]] = [
    {"prompt": b"caf\xe9", "chosen": "good", "rejected": "bad"},  # row 3: invalid_utf8
    {"prompt": "p3", "chosen": "", "rejected": "bad"},  # row 4: empty_field
    {"prompt": "p3", "chosen": "good", "rejected": " \t "},  # row 5: empty_field
    {"prompt": "p4", "chosen": "same", "rejected": "same"},  # row 6: chosen_equals_rejected
    {"prompt": "p4", "chosen": " same", "rejected": "same\t"},  # row 7: equal up to whitespace
    {"prompt": "p1", "chosen": "good", "rejected": "bad"},  # row 8: duplicate of row 1
]


def _json_value(value: str | bytes) -> bytes:
    """A JSON string literal; bytes are embedded raw, undecodable ones included, as in a bad file."""
    return b'"' + value + b'"' if isinstance(value, bytes) else json.dumps(value).encode()


def _json_object(record: dict[str, str | bytes]) -> bytes:
    return b"{" + b", ".join(json.dumps(k).encode() + b": " + _json_value(v) for k, v in record.items()) + b"}"


def _arrow_table(rows: list[dict[str, str | bytes]]):
    """An Arrow table of string columns that may hold invalid UTF-8, as a careless writer
    (viewing bytes as strings without validation) produces."""
    import pyarrow as pa

    columns = {}
    for name in ("prompt", "chosen", "rejected"):
        raw = [v if isinstance(v, bytes) else v.encode() for v in (r[name] for r in rows)]
        columns[name] = pa.array(raw, pa.binary()).view(pa.string())
    return pa.table(columns)


def write_rows(fmt: str, path: Path, rows: list[dict[str, str | bytes]]) -> Path:
    """Write ``rows`` in format ``fmt``; record k is line k (JSONL), record k (JSON, Parquet,
    datasets) or line k+1 (CSV, after the header)."""
    if fmt == "jsonl":
        path.write_bytes(b"".join(_json_object(r) + b"\n" for r in rows))
    elif fmt == "json":
        path.write_bytes(b"[\n" + b",\n".join(map(_json_object, rows)) + b"\n]")
    elif fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["prompt", "chosen", "rejected"])
        for r in rows:  # bytes travel through str as surrogates, back to raw bytes on encoding
            writer.writerow([v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v
                             for v in r.values()])
        data = text.getvalue().encode("utf-8", "surrogateescape")
        path.write_bytes(data)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(_arrow_table(rows), path)
    elif fmt == "datasets":
        import datasets

        datasets.Dataset(_arrow_table(rows)).save_to_disk(str(path))
    else:
        raise AssertionError(fmt)
    return path


FORMATS = ["jsonl", "json", "csv", "parquet", "datasets"]


def _name(fmt: str) -> str:
    return "data" if fmt == "datasets" else f"data.{fmt}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_quality_problems_are_dropped_and_counted_in_every_format(tmp_path: Path, fmt: str) -> None:
    path = write_rows(fmt, tmp_path / _name(fmt), GOOD_ROWS + QUALITY_ROWS)
    examples, report = load_preferences(path)
    assert examples == [PreferenceExample(**r) for r in GOOD_ROWS]  # type: ignore[arg-type]
    assert (report.rows_read, report.kept) == (8, 2)
    assert report.dropped == {"invalid_utf8": 1, "field_too_long": 0, "empty_field": 2, "chosen_equals_rejected": 2, "duplicate": 1}
    first = 2 if fmt == "csv" else 1  # CSV lines count the header
    assert report.dropped_lines == {
        "invalid_utf8": (first + 2,), "empty_field": (first + 3, first + 4),
        "chosen_equals_rejected": (first + 5, first + 6), "duplicate": (first + 7,),
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_row_dropped_is_one_clear_error(tmp_path: Path, fmt: str) -> None:
    # the two repeats of row 6 count as chosen_equals_rejected (checked before duplicate)
    path = write_rows(fmt, tmp_path / _name(fmt), QUALITY_ROWS[:-1] + [QUALITY_ROWS[3]] * 2)
    err = load_error(path)
    first = 2 if fmt == "csv" else 1
    lines = [first + i for i in range(7)]
    assert str(err) == (
        f"{path}: no usable examples: all 7 rows dropped (invalid_utf8: 1 (line {lines[0]}), "
        f"empty_field: 2 (lines {lines[1]}, {lines[2]}), chosen_equals_rejected: 4 (lines {lines[3]}, {lines[4]}, {lines[5]}, ...))"
    )
    assert (err.line, err.field) == (None, None)
    assert list(tmp_path.iterdir()) == [path]  # nothing written beside it


def test_single_row_dropped_is_one_clear_error(tmp_path: Path) -> None:
    path = write_jsonl_lines(tmp_path / "d.jsonl", [row(chosen="x", rejected="x")])
    assert str(load_error(path)) == (
        f"{path}: no usable examples: the only row was dropped (chosen_equals_rejected: 1 (line 1))"
    )


def test_unpaired_surrogate_escape_counts_as_invalid_utf8(tmp_path: Path) -> None:
    path = write_jsonl_lines(tmp_path / "d.jsonl", [row(), '{"prompt": "\\udc80", "chosen": "c", "rejected": "r"}',
                                                    '{"prompt": "p", "chosen": "\\ud800x", "rejected": "r"}'])
    examples, report = load_preferences(path)
    assert report.dropped == no_drops(invalid_utf8=2) and report.dropped_lines == {"invalid_utf8": (2, 3)}


def test_bad_byte_outside_the_three_fields_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "p", "chosen": "a", "rejected": "b", "note": "caf\xe9"}\n')
    assert load_preferences(path)[1].dropped == no_drops()


@pytest.mark.parametrize(
    ("example", "reason"),
    [
        (PreferenceExample("p", "a", "b"), None),
        (PreferenceExample("p", "a\udcff", ""), "invalid_utf8"),  # checked first: counts once
        (PreferenceExample("\n", "a", "a"), "empty_field"),
        (PreferenceExample("p", "a ", "\ta"), "chosen_equals_rejected"),
        (PreferenceExample("p", "a", "A"), None),  # case matters
    ],
)
def test_drop_reason_order(example: PreferenceExample, reason: str | None) -> None:
    assert drop_reason(example) == reason


def test_describe_drops_without_drops() -> None:
    assert LoadReport("x", 1, 1, no_drops()).describe_drops() == "none"


# ------------------------------------------------------------------------------------------
# record-numbered formats: JSON arrays, CSV (header = line 1), Parquet


def test_bad_record_in_json_array_uses_record_number(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    rows = [ROWS[0], ROWS[1], {"prompt": "p", "chosen": "c", "rejected": 5}]
    path.write_text(json.dumps({"rows": rows}))
    assert str(load_error(path)) == f"{path}:3: field 'rejected': must be a string, got number"


def test_json_array_element_not_object(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([ROWS[0], 42]))
    assert str(load_error(path)).startswith(f"{path}:2: record must be an object")


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_csv_missing_column_in_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [["prompt", "chosen"], ["p", "c"]])
    message = str(load_error(path))
    assert message.startswith(f"{path}:1: field 'rejected': missing column")


def test_csv_data_row_k_is_line_k_plus_1(tmp_path: Path) -> None:
    header = ["prompt", "chosen", "rejected"]
    path = write_csv(tmp_path / "d.csv", [header, ["p", "c", "r"], ["q", "c", "r", "extra"]])
    err = load_error(path)
    assert err.line == 3 and str(err).startswith(f"{path}:3: row has 4 cells, the header has 3 columns")


@pytest.mark.parametrize(
    ("rows", "line", "field", "problem"),
    [
        # an unquoted comma shifts every cell after it: refused, never guessed
        ([["Hello", " world", "good", "bad"]], 2, None, "row has 4 cells, the header has 3 columns"),
        ([["p", "c"]], 2, "rejected", "missing (row has 2 cells, the header has 3 columns)"),
        ([["p", "c", "r"], ["q"]], 3, "chosen", "missing (row has 1 cells, the header has 3 columns)"),
    ],
)
def test_csv_ragged_rows(tmp_path: Path, rows: list[list[str]], line: int, field: str | None,
                         problem: str) -> None:
    path = write_csv(tmp_path / "d.csv", [["prompt", "chosen", "rejected"], *rows])
    err = load_error(path)
    assert (err.line, err.field) == (line, field) and err.problem.startswith(problem)


def test_csv_short_row_missing_only_an_extra_column_is_ragged_too(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [["prompt", "chosen", "rejected", "id"], ["p", "c", "r"]])
    err = load_error(path)
    assert (err.line, err.field) == (2, None) and "row has 3 cells, the header has 4 columns" in str(err)


def test_csv_extra_columns_are_ignored(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [["id", "prompt", "chosen", "rejected", "score"], ["1", "p", "c", "r", "0.5"]])
    assert load_preferences(path)[0] == [PreferenceExample("p", "c", "r")]


def test_csv_repeated_required_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [["prompt", "chosen", "rejected", "chosen"], ["p", "a", "b", "c"]])
    err = load_error(path)
    assert (err.line, err.field) == (1, "chosen") and "more than once" in str(err)


def test_csv_header_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"pr\xffompt,chosen,rejected\np,c,r\n")
    assert str(load_error(path)) == f"{path}:1: header is not valid UTF-8: byte 0xff at line 1, column 3"


def test_csv_odd_column_names_keep_the_message_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    # (a CSV without a prompt column is an implicit-prompt file: mangle a required column)
    path.write_text('prompt,"cho\nsen",rejected\np,c,r\n', encoding="utf-8")
    assert str(load_error(path)) == (
        f"{path}:1: field 'chosen': missing column (columns found: prompt, 'cho\\nsen', rejected)"
    )


def test_csv_cell_over_the_csv_module_limit_is_read(tmp_path: Path) -> None:
    """A 200 kB cell is a length problem for the trainer (truncation), not a parse error."""
    path = write_csv(tmp_path / "d.csv", [["prompt", "chosen", "rejected"], ["x" * 200_000, "c", "r"]])
    assert len(load_preferences(path)[0][0].prompt) == 200_000


def test_csv_invalid_quoting_is_reported_at_its_line(tmp_path: Path) -> None:
    import csv as csv_module

    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen,rejected\np,c,r\n"unterminated,c,r\n', encoding="utf-8")
    # the stdlib reader accepts an unterminated quote at EOF as one long cell: a ragged row
    err = load_error(path)
    assert err.line == 3 and "row has 1 cells" in str(err)
    assert csv_module.field_size_limit() >= 2**31 - 1


def test_parquet_errors_use_record_number(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    bad = {"prompt": "p", "chosen": None, "rejected": "r"}
    pq.write_table(pa.Table.from_pylist(ROWS + [bad]), path)
    assert str(load_error(path)) == f"{path}:4: field 'chosen': must be a string, got null"

    missing = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "chosen": "c"}]), missing)
    assert str(load_error(missing)).startswith(f"{missing}: field 'rejected': missing column")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (5, "must be a string, got number"),
        (["a"], "must be a string, got array"),
        (None, "must be a string, got null"),
        ({"text": "a"}, "must be a string, got object"),
    ],
)
def test_json_array_wrong_type_names_record_and_field(tmp_path: Path, value: object, problem: str) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([ROWS[0], {**ROWS[1], "chosen": value}]))
    err = load_error(path)
    assert (err.line, err.field, err.problem) == (2, "chosen", problem)


def test_json_array_missing_field_names_record_and_field(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([ROWS[0], ROWS[1], {"prompt": "p", "rejected": "r"}]))
    err = load_error(path)
    assert (err.line, err.field, err.problem) == (3, "chosen", "missing")


def _column_types():
    import pyarrow as pa

    return [
        (pa.array([1, 2], pa.int64()), "int64"),
        (pa.array([1.5, 2.5]), "double"),
        (pa.array([["a"], ["b"]]), "list<"),  # datasets names the item "item", pyarrow "element"
        (pa.array([None, None], pa.null()), "null"),
        (pa.array([b"a", b"b"], pa.binary()), "binary"),
    ]


@pytest.mark.parametrize("fmt", ["parquet", "datasets"])
@pytest.mark.parametrize("case", range(5))
def test_columnar_wrong_column_type_is_named_at_the_schema(tmp_path: Path, fmt: str, case: int) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    column, type_name = _column_types()[case]
    table = pa.table({"prompt": ["p", "q"], "chosen": column, "rejected": ["r", "s"]})
    path = tmp_path / _name(fmt)
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        datasets.Dataset(table).save_to_disk(str(path))
    err = load_error(path)
    assert (err.line, err.field) == (None, "chosen")
    assert err.problem.startswith(f"column has type {type_name}") and err.problem.endswith(", expected string")


def test_parquet_dictionary_encoded_text_is_accepted(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": pa.array(["p", "q"]).dictionary_encode(), "chosen": ["c", "c"],
                             "rejected": ["r", "r"]}), path)
    assert [e.prompt for e in load_preferences(path)[0]] == ["p", "q"]


def test_empty_datasets_dir(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa

    path = tmp_path / "ds"
    schema = pa.schema([(f, pa.string()) for f in ("prompt", "chosen", "rejected")])
    datasets.Dataset(schema.empty_table()).save_to_disk(str(path))
    # datasets 5.2 writes no data file for an empty Dataset and cannot load it back itself;
    # either way the owner must hear "empty", not "not a dataset"
    message = str(load_error(path))
    assert "empty" in message and "not a dataset" not in message


def test_load_prompts_refuses_undecodable_prompt(tmp_path: Path) -> None:
    from common.data import load_prompts

    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError) as info:
        load_prompts(path)
    assert (info.value.line, info.value.field) == (2, "prompt") and "not valid UTF-8" in str(info.value)


def test_read_failure_is_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS))

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    assert str(load_error(path)) == f"{path}: cannot read: Permission denied"


def test_csv_lines_follow_the_file_with_multiline_cells(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen,rejected\n"two\nlines",c,r\n\np,c,\nq,c\n', encoding="utf-8")
    err = load_error(path)
    assert (err.line, err.field) == (6, "rejected")


def test_csv_dropped_lines_follow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen,rejected\n"two\nlines",c,r\n\np,c,\n', encoding="utf-8")
    assert load_preferences(path)[1].dropped_lines == {"empty_field": (5,)}


def test_load_prompts_needs_only_prompts(tmp_path):
    from common.data import load_prompts

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "Describe the park."}\n{"prompt": "What is the lake like?", "extra": 1}\n')
    assert load_prompts(jsonl) == ["Describe the park.", "What is the lake like?"]
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("prompt,other\nhello,x\n")
    assert load_prompts(csv_file) == ["hello"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'prompt': missing"):
        load_prompts(bad)
    no_col = tmp_path / "bad.csv"
    no_col.write_text("text\nhello\n")
    with pytest.raises(DataError, match="prompt"):
        load_prompts(no_col)
