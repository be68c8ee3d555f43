"""Tests for loading/saving preference datasets (:mod:`common.data`).

Every bad input must surface as a :class:`DataError` naming the file, the line and the
problem, because owners debug private files that we never get to see.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import pytest

from common.data import (
    SUPPORTED_FORMATS,
    LoadReport,
    PreferenceExample,
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
    with pytest.raises(DataError) as info:
        load_preferences(path)
    return info.value


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
    assert report == LoadReport(str(path), 3, 3, {"duplicate": 0})
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
    assert str(load_error(typed)) == f"{typed}:1: field 'rejected': must be a string, got number"


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
    assert (report.rows_read, report.kept, report.dropped) == (4, 2, {"duplicate": 2})


def test_duplicates_kept_when_asked(tmp_path: Path) -> None:
    path = write_jsonl_lines(tmp_path / "d.jsonl", [row(), row()])
    examples, report = load_preferences(path, drop_duplicates=False)
    assert len(examples) == 2 and report.dropped == {"duplicate": 0}


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
        (row(prompt=""), "field 'prompt': empty or whitespace-only"),
        (row(rejected=" \n\t"), "field 'rejected': empty or whitespace-only"),
        (row(chosen="same", rejected=" same\n"), "chosen and rejected are identical"),
        (
            '{"prompt": "\\udc80", "chosen": "c", "rejected": "r"}',
            "field 'prompt': contains invalid",
        ),
    ],
)
def test_bad_record_in_jsonl(tmp_path: Path, line: str, problem: str) -> None:
    path = write_jsonl_lines(tmp_path / "clean.jsonl", [row(), "", line])
    err = load_error(path)
    assert str(err).startswith(f"{path}:3: {problem}")
    assert err.line == 3


def test_non_utf8_jsonl_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes((row() + "\n" + row("q") + "\n").encode() + b'{"prompt": "caf\xe9"}\n')
    err = load_error(path)
    assert str(err) == f"{path}:3: not valid UTF-8: byte 0xe9 at column 16"


def test_non_utf8_json_and_csv_report_line(tmp_path: Path) -> None:
    json_path = tmp_path / "d.json"
    json_path.write_bytes(b'[\n{"prompt": "a"},\n{"prompt": "\xff"}\n]')
    assert str(load_error(json_path)) == f"{json_path}:3: not valid UTF-8: byte 0xff at column 13"

    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"prompt,chosen,rejected\np,c,r\np,\xc3(,r\n")
    err = load_error(csv_path)
    assert err.line == 3 and "not valid UTF-8: byte 0xc3 at column 3" in str(err)


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
    path = write_csv(tmp_path / "d.csv", [header, ["p", "c", "r"], ["q", "c", " "]])
    assert str(load_error(path)) == f"{path}:3: field 'rejected': empty or whitespace-only"


def test_csv_short_row_is_missing_field(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [["prompt", "chosen", "rejected"], ["p", "c"]])
    assert str(load_error(path)) == f"{path}:2: field 'rejected': missing"


def test_csv_identical_pair(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [["prompt", "chosen", "rejected"], ["p", "x", "x"]])
    assert str(load_error(path)).startswith(f"{path}:2: chosen and rejected are identical")


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


def test_read_failure_is_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS))

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    assert str(load_error(path)) == f"{path}: cannot read: Permission denied"


def test_csv_lines_follow_the_file_with_multiline_cells(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen,rejected\n"two\nlines",c,r\n\np,c,\n', encoding="utf-8")
    assert str(load_error(path)) == f"{path}:5: field 'rejected': empty or whitespace-only"


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
