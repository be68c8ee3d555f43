"""Every preference layout TRL accepts, in every file format (:mod:`common.data`).

Layouts: standard (strings), conversational (lists of ``{"role", "content"}`` messages) and
implicit prompt (only chosen/rejected, strings or messages, the prompt being their shared
beginning). Formats: JSONL, JSON, their gzip variants, CSV, Parquet, ``datasets`` directories
(a ``Dataset``, or a ``DatasetDict`` split picked with ``split=`` or ``DIR:SPLIT``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from common.data import (
    DROP_REASONS,
    SUPPORTED_FORMATS,
    Message,
    PreferenceExample,
    as_trl,
    drop_reason,
    load_preferences,
    load_prompts,
    parse_data_ref,
    save_preferences_jsonl,
    validate_record,
)
from common.errors import DataError


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def conv(*pairs: tuple[str, str]) -> tuple[Message, ...]:
    return tuple(Message(role, content) for role, content in pairs)


def no_drops(**counts: int) -> dict[str, int]:
    return {reason: counts.get(reason, 0) for reason in DROP_REASONS}


STANDARD_ROWS = [
    {"prompt": "What color is the sky?", "chosen": "Blue.", "rejected": "Green."},
    {"prompt": "Where is the sun?", "chosen": "In the sky.", "rejected": "In the sea."},
]
STANDARD = [
    PreferenceExample("What color is the sky?", "Blue.", "Green."),
    PreferenceExample("Where is the sun?", "In the sky.", "In the sea."),
]

CONVERSATIONAL_ROWS = [
    {"prompt": [msg("system", "Be brief."), msg("user", "What color is the sky?")],
     "chosen": [msg("assistant", "It is blue.")], "rejected": [msg("assistant", "It is green.")]},
    {"prompt": [msg("user", "Where is the sun?")],
     "chosen": [msg("assistant", "In the sky.")], "rejected": [msg("assistant", "In the sea.")]},
]
CONVERSATIONAL = [
    PreferenceExample(conv(("system", "Be brief."), ("user", "What color is the sky?")),
                      conv(("assistant", "It is blue.")), conv(("assistant", "It is green."))),
    PreferenceExample(conv(("user", "Where is the sun?")),
                      conv(("assistant", "In the sky.")), conv(("assistant", "In the sea."))),
]

# HH-RLHF style: TRL moves the space before the split point into the responses
IMPLICIT_STRING_ROWS = [
    {"chosen": "Human: What color is the sky? Assistant: Blue.",
     "rejected": "Human: What color is the sky? Assistant: Green."},
    {"chosen": "Human: Where is the sun? Assistant: In the sky.",
     "rejected": "Human: Where is the sun? Assistant: In the sea."},
]
IMPLICIT_STRING = [
    PreferenceExample("Human: What color is the sky? Assistant:", " Blue.", " Green."),
    # the rows share "... Assistant: In the s", and the split point follows no space
    PreferenceExample("Human: Where is the sun? Assistant: In the s", "ky.", "ea."),
]

IMPLICIT_CONVERSATIONAL_ROWS = [
    {"chosen": [msg("user", "What color is the sky?"), msg("assistant", "It is blue.")],
     "rejected": [msg("user", "What color is the sky?"), msg("assistant", "It is green.")]},
    {"chosen": [msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Where is the sun?"),
                msg("assistant", "In the sky.")],
     "rejected": [msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Where is the sun?"),
                  msg("assistant", "In the sea."), msg("user", "Really?")]},
]
IMPLICIT_CONVERSATIONAL = [
    PreferenceExample(conv(("user", "What color is the sky?")), conv(("assistant", "It is blue.")),
                      conv(("assistant", "It is green."))),
    PreferenceExample(conv(("user", "Hi"), ("assistant", "Hello!"), ("user", "Where is the sun?")),
                      conv(("assistant", "In the sky.")),
                      conv(("assistant", "In the sea."), ("user", "Really?"))),
]

LAYOUTS = {
    "standard": (STANDARD_ROWS, STANDARD),
    "conversational": (CONVERSATIONAL_ROWS, CONVERSATIONAL),
    "implicit-string": (IMPLICIT_STRING_ROWS, IMPLICIT_STRING),
    "implicit-conversational": (IMPLICIT_CONVERSATIONAL_ROWS, IMPLICIT_CONVERSATIONAL),
}

FORMATS = ["jsonl", "jsonl.gz", "json", "json.gz", "csv", "parquet", "datasets",
           "datasetdict-split", "datasetdict-ref"]


def _csv_cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def write_rows(fmt: str, directory: Path, rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Write ``rows`` in ``fmt`` under ``directory``; return the path to load and the keyword
    arguments to load it with."""
    if fmt in ("jsonl", "jsonl.gz"):
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    elif fmt in ("json", "json.gz"):
        data = json.dumps(rows, indent=2).encode()
    if fmt in ("jsonl", "json"):
        path = directory / f"data.{fmt}"
        path.write_bytes(data)
        return str(path), {}
    if fmt in ("jsonl.gz", "json.gz"):
        path = directory / f"data.{fmt}"
        with gzip.open(path, "wb") as handle:
            handle.write(data)
        return str(path), {}
    if fmt == "csv":
        path = directory / "data.csv"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: _csv_cell(v) for k, v in r.items()} for r in rows)
        return str(path), {}
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = directory / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        return str(path), {}
    import datasets

    path = directory / "ds"
    if fmt == "datasets":
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
        return str(path), {}
    other = [dict(rows[0])]
    datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(rows),
                          "test_prefs": datasets.Dataset.from_list(other)}).save_to_disk(str(path))
    if fmt == "datasetdict-split":
        return str(path), {"split": "train_prefs"}
    assert fmt == "datasetdict-ref"
    return f"{path}:train_prefs", {}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def load_error(path: Any, **kwargs: Any) -> DataError:
    with pytest.raises(DataError) as info:
        load_preferences(path, **kwargs)
    assert "\n" not in str(info.value)
    return info.value


# ------------------------------------------------------------------------------------------
# every format × every layout


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_loads_in_every_format(tmp_path: Path, fmt: str, layout: str) -> None:
    rows, expected = LAYOUTS[layout]
    path, kwargs = write_rows(fmt, tmp_path, rows)
    examples, report = load_preferences(path, **kwargs)
    assert examples == expected
    assert (report.path, report.rows_read, report.kept, report.dropped) == (path, 2, 2, no_drops())
    assert all(e.conversational is layout.endswith("conversational") for e in examples)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_load_prompts_in_every_format_and_layout(tmp_path: Path, fmt: str, layout: str) -> None:
    rows, expected = LAYOUTS[layout]
    path, kwargs = write_rows(fmt, tmp_path, rows)
    assert load_prompts(path, **kwargs) == [e.prompt for e in expected]


def test_implicit_extraction_is_trls_own(tmp_path: Path) -> None:
    from trl.data_utils import extract_prompt

    rows = IMPLICIT_STRING_ROWS + [
        {"chosen": "abc", "rejected": "abcd"},  # one a prefix of the other
        {"chosen": "The answer is 4 ", "rejected": "The answer is 5"},
        {"chosen": "same start, then a", "rejected": "same start, then b"},
    ]
    examples, _ = load_preferences(write_jsonl(tmp_path / "s.jsonl", rows))
    assert [e.as_dict() for e in examples] == [extract_prompt(r) for r in rows]
    assert examples[2] == PreferenceExample("ab", "c", "cd")

    conversations, _ = load_preferences(write_jsonl(tmp_path / "c.jsonl", IMPLICIT_CONVERSATIONAL_ROWS))
    assert [e.as_dict() for e in conversations] == [extract_prompt(r) for r in IMPLICIT_CONVERSATIONAL_ROWS]


def test_string_prompt_beside_conversations_is_implicit_as_in_trl(tmp_path: Path) -> None:
    """TRL's maybe_extract_prompt: a string prompt column beside conversations is ignored."""
    from trl.data_utils import maybe_extract_prompt

    rows = [{"prompt": "What color is the sky?", **r} for r in IMPLICIT_CONVERSATIONAL_ROWS]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    examples, _ = load_preferences(path)
    assert examples == IMPLICIT_CONVERSATIONAL
    assert [e.as_dict() for e in examples] == [maybe_extract_prompt(r) for r in rows]

    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    assert load_preferences(parquet)[0] == IMPLICIT_CONVERSATIONAL
    assert load_prompts(parquet) == [e.prompt for e in IMPLICIT_CONVERSATIONAL]


def test_parquet_message_list_column_is_accepted(tmp_path: Path) -> None:
    """The case that failed before: ``column has type list<element: struct<role: string,
    content: string>>, expected string``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(CONVERSATIONAL_ROWS), path)
    assert str(pq.read_schema(path).field("chosen").type) == "list<element: struct<role: string, content: string>>"
    assert load_preferences(path)[0] == CONVERSATIONAL


def test_arrow_message_structs_may_carry_extra_fields_and_large_types(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    message = pa.struct([("content", pa.large_string()), ("role", pa.string()), ("name", pa.string())])
    kind = pa.large_list(message)
    table = pa.table({
        "prompt": pa.array([[{"role": "user", "content": "q", "name": "ann"}]], kind),
        "chosen": pa.array([[{"role": "assistant", "content": "a", "name": None}]], kind),
        "rejected": pa.array([[{"role": "assistant", "content": "b", "name": None}]], kind),
    })
    pq.write_table(table, tmp_path / "d.parquet")
    assert load_preferences(tmp_path / "d.parquet")[0] == [
        PreferenceExample(conv(("user", "q")), conv(("assistant", "a")), conv(("assistant", "b")))
    ]


@pytest.mark.parametrize("fmt", ["parquet", "datasets"])
def test_columns_of_other_types_are_still_refused(tmp_path: Path, fmt: str) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    cases = [
        (pa.array([1, 2]), "column has type int64, expected string"),
        (pa.array([["a"], ["b"]]),
         "column has type list<{item}: string> (conversations need "
         "list<struct<role: string, content: string>>), expected string"),
        (pa.array([[{"role": "user", "content": 1}]] * 2),
         "column has type list<{item}: struct<role: string, content: int64>> (conversations need "
         "list<struct<role: string, content: string>>), expected string"),
    ]
    for number, (column, problem) in enumerate(cases):
        table = pa.table({"prompt": ["p", "q"], "chosen": column, "rejected": ["r", "s"]})
        path = tmp_path / f"d{number}.parquet" if fmt == "parquet" else tmp_path / f"d{number}"
        if fmt == "parquet":
            pq.write_table(table, path)
        else:
            datasets.Dataset(table).save_to_disk(str(path))
        err = load_error(path)
        item = "element" if fmt == "parquet" else "item"
        assert (err.line, err.field, err.problem) == (None, "chosen", problem.format(item=item))


# ------------------------------------------------------------------------------------------
# one layout per file


def test_a_later_row_of_the_other_layout_is_refused_at_its_line(tmp_path: Path) -> None:
    rows = STANDARD_ROWS * 3 + [{"prompt": "p", "chosen": [msg("assistant", "a")], "rejected": "b"}]
    path = write_jsonl(tmp_path / "f.jsonl", rows)
    assert str(load_error(path)) == (
        f"{path}:7: field 'chosen': a list of messages in a file whose first row (line 1) has strings"
    )

    rows = [*CONVERSATIONAL_ROWS, {**CONVERSATIONAL_ROWS[0], "rejected": "It is green."}]
    path = write_jsonl(tmp_path / "g.jsonl", ["", *rows])  # the first row is on line 2
    assert str(load_error(path)) == (
        f"{path}:4: field 'rejected': a string in a file whose first row (line 2) has lists of messages"
    )

    rows = [*CONVERSATIONAL_ROWS, {**CONVERSATIONAL_ROWS[0], "prompt": "What color is the sky?"}]
    err = load_error(write_jsonl(tmp_path / "h.jsonl", rows))
    assert (err.line, err.field) == (3, "prompt")
    assert err.problem == "a string in a file whose first row (line 1) has lists of messages"


def test_the_first_row_mixing_layouts_names_the_field_that_decided(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a", "rejected": [msg("assistant", "b")]}])
    assert str(load_error(path)) == (
        f"{path}:1: field 'rejected': a list of messages, but field 'chosen' of the same row is a string "
        "(a row's fields are all strings or all lists of messages)"
    )


def test_implicit_and_explicit_rows_do_not_mix(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [*IMPLICIT_STRING_ROWS, {"prompt": "p", "chosen": "a", "rejected": "b"}])
    assert str(load_error(path)) == (
        f"{path}:3: field 'prompt': explicit in this row, but the file's first row (line 1) has an "
        "implicit prompt (the shared beginning of chosen and rejected)"
    )
    # an explicit file keeps saying a row's prompt is missing
    path = write_jsonl(tmp_path / "e.jsonl", [*STANDARD_ROWS, IMPLICIT_STRING_ROWS[0]])
    assert str(load_error(path)) == f"{path}:3: field 'prompt': missing"
    path = write_jsonl(tmp_path / "c.jsonl", [*CONVERSATIONAL_ROWS, IMPLICIT_CONVERSATIONAL_ROWS[0]])
    assert str(load_error(path)) == f"{path}:3: field 'prompt': missing"


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"text": "hello", "id": 3},
         "missing fields prompt, chosen and rejected (keys found: text, id); a row needs all three, or "
         "chosen and rejected alone when the prompt is their shared beginning"),
        ({}, "missing fields prompt, chosen and rejected (keys found: none); a row needs all three, or "
             "chosen and rejected alone when the prompt is their shared beginning"),
        ({"prompt": "p"}, "field 'chosen': missing"),
        ({"chosen": "a"}, "field 'rejected': missing"),
        ({"rejected": [msg("assistant", "b")]}, "field 'chosen': missing"),
    ],
)
def test_first_row_says_what_is_missing(tmp_path: Path, record: dict, problem: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [record])
    assert str(load_error(path)) == f"{path}:1: {problem}"


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        (["hi"], "field 'chosen': must be a string, got array"),  # not messages: a standard file
        ([msg("assistant", "a"), "hi"], "field 'chosen': message 2 must be an object with role and content, got string"),
        ([msg("assistant", "a"), {"content": "x"}], "field 'chosen': message 2: 'role' missing"),
        ([{"role": "assistant"}], "field 'chosen': message 1: 'content' missing"),
        ([msg("", "a")], "field 'chosen': message 1: 'role' must be a non-empty string, got an empty string"),
        ([{"role": 1, "content": "a"}], "field 'chosen': message 1: 'role' must be a non-empty string, got number"),
        ([{"role": "assistant", "content": None}], "field 'chosen': message 1: 'content' must be a string, got null"),
        ([{"role": "assistant", "content": [{"type": "text", "text": "a"}]}],
         "field 'chosen': message 1: 'content' must be a string, got array"),
    ],
)
def test_malformed_messages_are_structural_errors(tmp_path: Path, messages: list, problem: str) -> None:
    rows = [{"prompt": [msg("user", "q")], "chosen": messages, "rejected": [msg("assistant", "b")]}]
    if problem.endswith("got array") and "message" not in problem:
        rows[0] = {"prompt": "q", "chosen": messages, "rejected": "b"}
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert str(load_error(path)) == f"{path}:1: {problem}"


def test_conversational_field_of_another_type(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [CONVERSATIONAL_ROWS[0], {**CONVERSATIONAL_ROWS[0], "chosen": 5}])
    assert str(load_error(path)) == f"{path}:2: field 'chosen': must be a list of messages, got number"


def test_a_null_in_the_first_row_does_not_decide_the_layout(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**CONVERSATIONAL_ROWS[0], "chosen": None}, CONVERSATIONAL_ROWS[1]]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert str(load_error(path)) == f"{path}:1: field 'chosen': must be a list of messages, got null"
    path = write_jsonl(tmp_path / "d.jsonl", [{**CONVERSATIONAL_ROWS[0], "prompt": None}])
    assert str(load_error(path)) == f"{path}:1: field 'prompt': must be a list of messages, got null"


def test_repeated_key_in_a_message_is_refused(tmp_path: Path) -> None:
    line = ('{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", '
            '"content": "a", "content": "b"}], "rejected": [{"role": "assistant", "content": "c"}]}')
    path = write_jsonl(tmp_path / "d.jsonl", [line])
    assert str(load_error(path)) == (
        f"{path}:1: field 'chosen': message 1: key 'content' appears more than once: which value is meant?"
    )


def test_extra_message_keys_are_ignored(tmp_path: Path) -> None:
    row = {"prompt": [{"role": "user", "content": "q", "name": "ann"}],
           "chosen": [{"role": "assistant", "content": "a", "tool_calls": []}],
           "rejected": [{"role": "assistant", "content": "b", "weight": 0}]}
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    assert load_preferences(path)[0] == [
        PreferenceExample(conv(("user", "q")), conv(("assistant", "a")), conv(("assistant", "b")))
    ]


# ------------------------------------------------------------------------------------------
# CSV


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_csv_conversational_cells_must_all_be_json(tmp_path: Path) -> None:
    good = [json.dumps([msg("user", "q")]), json.dumps([msg("assistant", "a")]), json.dumps([msg("assistant", "b")])]
    path = write_csv(tmp_path / "d.csv", [["prompt", "chosen", "rejected"], good, [good[0], good[1], "plain text"]])
    err = load_error(path)
    assert (err.line, err.field) == (3, "rejected")
    assert err.problem == (
        "invalid JSON: Expecting value (character 1 of the cell); the chosen cell of the first data row "
        "(line 2) is a JSON list of messages, so every prompt, chosen and rejected cell must be JSON"
    )


def test_csv_text_file_with_a_later_json_message_cell_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [["prompt", "chosen", "rejected"], ["p", "a", "b"],
                                          ["q", json.dumps([msg("assistant", "a")]), "b"]])
    assert str(load_error(path)) == (
        f"{path}:3: field 'chosen': a list of messages in a file whose first row (line 2) has strings"
    )
    # other JSON-looking text stays text
    path = write_csv(tmp_path / "e.csv", [["prompt", "chosen", "rejected"], ["p", "[1, 2]", '["x"]']])
    assert load_preferences(path)[0] == [PreferenceExample("p", "[1, 2]", '["x"]')]


def test_csv_implicit_and_empty_conversational_cells(tmp_path: Path) -> None:
    chosen = json.dumps([msg("user", "q"), msg("assistant", "a")])
    rejected = json.dumps([msg("user", "q"), msg("assistant", "b")])
    path = write_csv(tmp_path / "d.csv", [["chosen", "rejected", "id"], [chosen, rejected, "1"], [chosen, "", "2"]])
    examples, report = load_preferences(path)
    assert examples == [PreferenceExample(conv(("user", "q")), conv(("assistant", "a")), conv(("assistant", "b")))]
    assert report.dropped == no_drops(empty_field=1) and report.dropped_lines == {"empty_field": (3,)}


# ------------------------------------------------------------------------------------------
# row-level quality problems of conversations and implicit prompts


def test_conversational_quality_problems_are_dropped_and_counted(tmp_path: Path) -> None:
    q, a, b = [msg("user", "q")], [msg("assistant", "a")], [msg("assistant", "b")]
    rows = [
        {"prompt": q, "chosen": a, "rejected": b},  # 1 kept
        {"prompt": [msg("user", "q"), msg("user", " \t")], "chosen": a, "rejected": b},  # 2 empty message
        {"prompt": q, "chosen": [msg("assistant", "")], "rejected": b},  # 3 empty content
        {"prompt": [], "chosen": a, "rejected": b},  # 4 no messages
        {"prompt": q, "chosen": [msg("assistant", " same")], "rejected": [msg("assistant", "same\n")]},  # 5
        {"prompt": q, "chosen": a, "rejected": b},  # 6 duplicate of 1
        {"prompt": q, "chosen": [msg("user", "x"), msg("assistant", "same")],
         "rejected": [msg("system", "x"), msg("assistant", "same")]},  # 7 roles differ: kept
    ]
    lines = [json.dumps(r).encode() for r in rows]
    lines.insert(2, b'{"prompt": [{"role": "user", "content": "caf\xe9"}], "chosen": [{"role": "assistant", '
                    b'"content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}')  # line 3
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    examples, report = load_preferences(path)
    assert examples == [PreferenceExample.from_dict(rows[0]), PreferenceExample.from_dict(rows[6])]
    assert report.dropped == {"invalid_utf8": 1, "field_too_long": 0, "empty_field": 3, "chosen_equals_rejected": 1, "duplicate": 1}
    assert report.dropped_lines == {"invalid_utf8": (3,), "empty_field": (2, 4, 5),
                                    "chosen_equals_rejected": (6,), "duplicate": (7,)}


def test_invalid_utf8_inside_arrow_message_lists_drops_only_that_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    contents = pa.array([b"caf\xe9", b"fine"], pa.binary()).view(pa.string())
    messages = pa.StructArray.from_arrays([pa.array(["assistant", "assistant"]), contents], ["role", "content"])
    chosen = pa.ListArray.from_arrays(pa.array([0, 1, 2], pa.int32()), messages)
    table = pa.table({"prompt": pa.array([[msg("user", "q1")], [msg("user", "q2")]]), "chosen": chosen,
                      "rejected": pa.array([[msg("assistant", "no")], [msg("assistant", "no")]])})
    pq.write_table(table, tmp_path / "d.parquet")
    examples, report = load_preferences(tmp_path / "d.parquet")
    assert examples == [PreferenceExample(conv(("user", "q2")), conv(("assistant", "fine")), conv(("assistant", "no")))]
    assert report.dropped == no_drops(invalid_utf8=1) and report.dropped_lines == {"invalid_utf8": (1,)}


def test_implicit_rows_without_a_shared_beginning_are_dropped(tmp_path: Path) -> None:
    rows = [
        IMPLICIT_STRING_ROWS[0],
        {"chosen": "Yes.", "rejected": "No."},  # nothing shared: empty prompt
        {"chosen": "", "rejected": "No."},  # an empty response (TRL's extract_prompt needs both)
        {"chosen": [msg("assistant", "a")], "rejected": [msg("assistant", "b")]},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows[:3])
    examples, report = load_preferences(path)
    assert examples == IMPLICIT_STRING[:1]
    assert report.dropped == no_drops(empty_field=2) and report.dropped_lines == {"empty_field": (2, 3)}

    path = write_jsonl(tmp_path / "c.jsonl", [rows[3]])
    assert str(load_error(path)) == (
        f"{path}: no usable examples: the only row was dropped (empty_field: 1 (line 1)); the rows have "
        "no explicit prompt, so the prompt is the shared beginning of chosen and rejected (TRL's implicit prompt)"
    )
    with pytest.raises(DataError) as info:
        load_prompts(path)
    assert str(info.value) == (
        f"{path}:1: field 'prompt': empty: no messages (the implicit prompt: the shared beginning of chosen "
        "and rejected)"
    )


@pytest.mark.parametrize(
    ("example", "reason"),
    [
        (CONVERSATIONAL[0], None),
        (PreferenceExample(conv(("user", "q\udce9")), conv(("assistant", "")), conv()), "invalid_utf8"),
        (PreferenceExample(conv(("user", "q")), conv(), conv(("assistant", "b"))), "empty_field"),
        (PreferenceExample(conv(("user", "q")), conv(("assistant", "a ")), conv(("assistant", "\ta"))),
         "chosen_equals_rejected"),
        (PreferenceExample(conv(("user", "q")), conv(("assistant", "a")), conv(("assistant", "a"), ("user", "b"))),
         None),
    ],
)
def test_drop_reason_of_conversations(example: PreferenceExample, reason: str | None) -> None:
    assert drop_reason(example) == reason


# ------------------------------------------------------------------------------------------
# splits and DIR:SPLIT references


def _dataset_dict(path: Path, splits: dict[str, list[dict]]) -> Path:
    import datasets

    datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(str(path))
    return path


def test_split_selection_and_errors(tmp_path: Path) -> None:
    path = _dataset_dict(tmp_path / "dd", {"train_prefs": STANDARD_ROWS, "test_prefs": STANDARD_ROWS[:1]})
    assert load_preferences(path, split="test_prefs")[0] == STANDARD[:1]
    assert load_preferences(f"{path}:test_prefs")[0] == STANDARD[:1]
    assert load_prompts(f"{path}:test_prefs") == [STANDARD[0].prompt]
    assert load_preferences(f"{path}:test_prefs", split="test_prefs")[0] == STANDARD[:1]

    assert str(load_error(path)) == (
        f"{path}: DatasetDict has no 'train' split (splits: train_prefs, test_prefs); "
        "pick one with `split` (NAME, or PATH:SPLIT)"
    )
    assert str(load_error(path, split="dev")) == f"{path}: DatasetDict has no split 'dev' (splits: train_prefs, test_prefs)"
    assert str(load_error(f"{path}:dev")) == f"{path}:dev: DatasetDict has no split 'dev' (splits: train_prefs, test_prefs)"
    with pytest.raises(DataError) as info:
        load_prompts(path)
    assert "no 'train' split (splits: train_prefs, test_prefs)" in str(info.value)
    assert str(load_error(f"{path}:dev", split="test_prefs")) == (
        f"{path}:dev: two splits given: 'dev' in the path and 'test_prefs' as the split"
    )


def test_split_for_a_file_or_a_plain_dataset_is_an_error(tmp_path: Path) -> None:
    import datasets

    file = write_jsonl(tmp_path / "d.jsonl", STANDARD_ROWS)
    assert str(load_error(file, split="train")) == (
        f"{file}: split 'train' given, but only a datasets directory has splits and this is a file"
    )
    assert str(load_error(f"{file}:train")) == f"{file}:train: no such file or directory"
    single = tmp_path / "ds"
    datasets.Dataset.from_list(STANDARD_ROWS).save_to_disk(str(single))
    assert str(load_error(single, split="train")) == (
        f"{single}: split 'train' given, but the directory holds a single Dataset, not a DatasetDict with splits"
    )


def test_parse_data_ref(tmp_path: Path) -> None:
    (tmp_path / "dd").mkdir()
    odd = tmp_path / "a:b.jsonl"
    odd.write_text("")
    assert parse_data_ref(f"{tmp_path}/dd:test") == (f"{tmp_path}/dd", "test")
    assert parse_data_ref(f"{tmp_path}/dd") == (f"{tmp_path}/dd", None)
    assert parse_data_ref(str(odd)) == (str(odd), None)  # the whole text exists: no split
    assert parse_data_ref(f"{tmp_path}/missing:test") == (f"{tmp_path}/missing:test", None)
    assert parse_data_ref(f"{tmp_path}/dd:") == (f"{tmp_path}/dd:", None)
    assert parse_data_ref("hf:org/name") == ("hf:org/name", None)


# ------------------------------------------------------------------------------------------
# gzip


def test_gzip_line_numbers_and_corrupt_files(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(STANDARD_ROWS[0]) + "\n\n" + '{"prompt": "p", "chosen": "c"}\n')
    assert str(load_error(path)) == f"{path}:3: field 'rejected': missing"

    for name in ("bad.jsonl.gz", "bad.json.gz"):
        bad = tmp_path / name
        bad.write_bytes(b"not gzip at all")
        assert str(load_error(bad)).startswith(f"{bad}: not a readable gzip file: Not a gzipped file")
    truncated = tmp_path / "cut.json.gz"
    truncated.write_bytes(gzip.compress(json.dumps(STANDARD_ROWS).encode())[:-12])
    assert str(load_error(truncated)).startswith(f"{truncated}: not a readable gzip file: ")

    other = tmp_path / "d.csv.gz"
    other.write_bytes(gzip.compress(b"prompt,chosen,rejected\n"))
    assert str(load_error(other)).startswith(f"{other}: unsupported format ('.csv.gz'); supported: ")


def test_supported_formats_name_the_new_ones() -> None:
    assert SUPPORTED_FORMATS[:6] == (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".parquet")
    assert "DIR:SPLIT" in SUPPORTED_FORMATS[6]


# ------------------------------------------------------------------------------------------
# the example type


def test_as_dict_from_dict_round_trip_and_hashing() -> None:
    for example in STANDARD + CONVERSATIONAL + IMPLICIT_CONVERSATIONAL:
        row = example.as_dict()
        assert PreferenceExample.from_dict(row) == example
        assert hash(PreferenceExample.from_dict(row)) == hash(example)
    assert CONVERSATIONAL[1].as_dict() == CONVERSATIONAL_ROWS[1]
    assert STANDARD[0].as_dict() == STANDARD_ROWS[0]
    assert len({*CONVERSATIONAL, *CONVERSATIONAL, *STANDARD}) == 4
    assert as_trl("text") == "text"
    assert as_trl(conv(("user", "q"))) == [{"role": "user", "content": "q"}]
    assert (STANDARD[0].conversational, CONVERSATIONAL[0].conversational) == (False, True)


def test_examples_hold_one_kind_and_store_tuples() -> None:
    listed = PreferenceExample([Message("user", "q")], [Message("assistant", "a")], [Message("assistant", "b")])
    assert listed.prompt == (Message("user", "q"),) and isinstance(listed.chosen, tuple)
    with pytest.raises(ValueError, match="all strings or all conversations"):
        PreferenceExample("q", conv(("assistant", "a")), conv(("assistant", "b")))
    with pytest.raises(TypeError, match="PreferenceExample.chosen must be a str or a tuple of Message"):
        PreferenceExample(conv(("user", "q")), [{"role": "assistant", "content": "a"}], conv(("assistant", "b")))


def test_save_writes_trl_rows_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    save_preferences_jsonl(CONVERSATIONAL + IMPLICIT_CONVERSATIONAL, path)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [e.as_dict() for e in CONVERSATIONAL + IMPLICIT_CONVERSATIONAL]
    assert lines[0]["chosen"] == [{"role": "assistant", "content": "It is blue."}]
    assert load_preferences(path)[0] == CONVERSATIONAL + IMPLICIT_CONVERSATIONAL
    # implicit strings are saved with their extracted prompt and load back unchanged
    save_preferences_jsonl(IMPLICIT_STRING, path)
    assert load_preferences(path)[0] == IMPLICIT_STRING


def test_validate_record_still_takes_standard_records() -> None:
    assert validate_record("x.jsonl", 4, STANDARD_ROWS[0]) == STANDARD[0]
    with pytest.raises(DataError) as info:
        validate_record("x.jsonl", 4, CONVERSATIONAL_ROWS[0])
    assert str(info.value) == "x.jsonl:4: field 'prompt': must be a string, got array"


def test_load_prompts_of_conversations_refuses_bad_ones(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": [msg("user", "Describe the park.")]},
                                              {"prompt": [msg("user", "ok"), msg("user", " ")]}])
    with pytest.raises(DataError) as info:
        load_prompts(path)
    assert str(info.value) == f"{path}:2: field 'prompt': message 2: content is empty or whitespace-only"
    path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": [msg("user", "Describe the park.")]}, {"prompt": "text"}])
    with pytest.raises(DataError) as info:
        load_prompts(path)
    assert str(info.value) == f"{path}:2: field 'prompt': a string in a file whose first row (line 1) has lists of messages"


def test_fifos_devices_and_symlinks_to_them_are_refused_at_once(tmp_path):
    """Issue 12 #7: a FIFO hung with no output; --eval as a symlink to /dev/zero grew to 3 GiB."""
    import os

    fifo = tmp_path / "owner.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"not a regular file \(a FIFO\)"):
        load_preferences(fifo)
    zero = tmp_path / "eval.jsonl"
    zero.symlink_to("/dev/zero")
    with pytest.raises(DataError, match=r"not a regular file \(a device\)"):
        load_preferences(zero)
    with pytest.raises(DataError, match=r"not a regular file"):
        load_prompts(zero)


def test_an_absurdly_long_field_drops_that_row_only(tmp_path):
    import json as _json

    from common.data import MAX_FIELD_CHARS

    path = tmp_path / "owner.jsonl"
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"},
            {"prompt": "x" * (MAX_FIELD_CHARS + 1), "chosen": "a", "rejected": "b"}]
    path.write_text("\n".join(_json.dumps(r) for r in rows[:2]) + "\n")
    examples, report = load_preferences(path)
    assert len(examples) == 1 and report.dropped["field_too_long"] == 1
    assert "field_too_long: 1 (line 2)" in report.describe_drops()


# ------------------------------------------------------------------------------------------
# Streaming: JSON, JSON.gz and CSV are read in bounded memory, errors still name their place


BIG_ROW = {"prompt": "Rank these two answers to the question. " * 50, "chosen": "a careful answer " * 20,
           "rejected": "a careless answer " * 20}
"""One ~3 KB row; big files repeat it, so all but one row are dropped as duplicates and what
a load keeps in memory is the reader's own working set, not the dataset."""


def _big_text(fmt: str, rows: int) -> str:
    """``rows`` copies of :data:`BIG_ROW` as the text of a ``fmt`` file."""
    if fmt == "csv":
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow(BIG_ROW.values())
        return ",".join(BIG_ROW) + "\n" + line.getvalue() * rows
    array = "[\n" + ",\n".join([json.dumps(BIG_ROW, indent=1)] * rows) + "\n]"
    return '{"source": "export", "data": ' + array + "}" if fmt == "json-wrapped" else array


@pytest.mark.parametrize("fmt", ["json", "json-wrapped", "json.gz", "csv"])
def test_big_files_are_read_in_memory_far_below_their_size(tmp_path: Path, fmt: str) -> None:
    """Read whole, a 20 MB JSON file took ~3x its size in memory (text, bytes, parsed
    document) and a CSV ~5x; streamed, the reader needs a few of its 64 KiB chunks."""
    import tracemalloc

    rows = 8_000
    text = _big_text(fmt, rows).encode()
    path = tmp_path / ("d.json" if fmt == "json-wrapped" else f"d.{fmt}")
    path.write_bytes(gzip.compress(text, compresslevel=1) if fmt == "json.gz" else text)
    assert len(text) > 20_000_000
    tracemalloc.start()
    try:
        examples, report = load_preferences(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (report.rows_read, report.kept, report.dropped["duplicate"]) == (rows, 1, rows - 1)
    assert examples[0] == PreferenceExample(**BIG_ROW)
    assert peak < len(text) / 4, f"peak {peak / 1e6:.1f} MB for {len(text) / 1e6:.1f} MB of text"


def _big_json_with(tmp_path: Path, rows: int, element: int, bad: str) -> tuple[Path, str]:
    """A pretty-printed array of ``rows`` rows whose ``element``-th (1-based) is ``bad``."""
    elements = [json.dumps(BIG_ROW, indent=2)] * rows
    elements[element - 1] = bad
    text = "[\n" + ",\n".join(elements) + "\n]"
    path = tmp_path / "d.json"
    path.write_text(text, encoding="utf-8")
    return path, text


def _stdlib_place(text: str) -> tuple[int, int, str]:
    """Where and why the stdlib refuses ``text`` parsed whole: what the messages must say."""
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads(text)
    return info.value.lineno, info.value.colno, info.value.msg


def test_errors_in_the_3rd_element_of_a_big_json_array_name_its_place(tmp_path: Path) -> None:
    """A record error names the record number, as before; a syntax error names the file's line
    and column, counted across the chunks the reader has already dropped."""
    path, _ = _big_json_with(tmp_path, 5_000, 3, json.dumps({**BIG_ROW, "rejected": 5}))
    assert str(load_error(path)) == f"{path}:3: field 'rejected': must be a string, got number"

    path, text = _big_json_with(tmp_path, 5_000, 3, '{\n  "prompt": "p",\n  "chosen": c\n}')
    line, column, problem = _stdlib_place(text)
    assert (line, column, problem) == (14, 13, "Expecting value")  # "[", then 5 lines per element
    assert str(load_error(path)) == f"{path}:{line}: invalid JSON: {problem} (column {column})"


def test_a_syntax_error_deep_in_a_big_json_array_is_found_before_any_record(tmp_path: Path) -> None:
    """The first pass checks the whole document, so the 1st row's missing field does not hide
    the broken 4 000th element (and its line, far past the first chunks, is the file's)."""
    path, text = _big_json_with(tmp_path, 5_000, 4_000, '{"prompt": "p", "chosen": "c" "rejected": "r"}')
    text = text.replace(json.dumps(BIG_ROW, indent=2), json.dumps({"prompt": "p"}), 1)
    path.write_text(text, encoding="utf-8")
    line, column, problem = _stdlib_place(text)
    assert line > 15_000
    assert str(load_error(path)) == f"{path}:{line}: invalid JSON: {problem} (column {column})"


@pytest.mark.parametrize("cut", ["before the bracket", "inside an element"])
def test_a_truncated_json_array_is_an_error_naming_the_file(tmp_path: Path, cut: str) -> None:
    _, text = _big_json_with(tmp_path, 5_000, 1, json.dumps(BIG_ROW))
    text = text[: text.rindex("]")] if cut == "before the bracket" else text[: len(text) // 2]
    for name, data in (("cut.json", text.encode()), ("cut.json.gz", gzip.compress(text.encode(), 1))):
        path = tmp_path / name
        path.write_bytes(data)
        line, column, problem = _stdlib_place(text)
        err = load_error(path)
        assert str(err) == f"{path}:{line}: invalid JSON: {problem} (column {column})"
    if cut == "before the bracket":
        assert (line, problem) == (text.count("\n") + 1, "Expecting ',' delimiter")  # at the end


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_json_read_in_tiny_chunks_reads_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 chunk: int) -> None:
    """Chunk boundaries fall inside numbers (``2.`` of ``2.5``), escapes (a ``\\ud83d\\ude00``
    pair), multi-byte characters and keys: none may change what is read or reported."""
    import common.data

    rows = [{"prompt": "caf\u00e9 \U0001F600 \\ \"q\"", "chosen": "a\u2028b", "rejected": "c", "score": -1.25e-3},
            {"prompt": "p", "chosen": "c", "rejected": "r", "n": [1, 22, 333.5, True, None]}]
    documents = {
        "rows.json": json.dumps({"rows": [rows[1]], "data": rows}, ensure_ascii=True).encode(),
        "plain.json": json.dumps(rows, ensure_ascii=False, indent=1).encode(),
        "number.json": (json.dumps(rows) + "  ")[:-3].encode() + b", 2.5]",  # an element that is a number
        "byte.json": b'[\n' + json.dumps(rows[0]).encode() + b',\n{"prompt": "p"}\xe9\n]',
        "bom.json": b"\xef\xbb\xbf" + json.dumps(rows).encode() + b"\n",
    }
    expected = {}
    for name, data in documents.items():
        (tmp_path / name).write_bytes(data)
        expected[name] = _outcome(tmp_path / name)
    assert "got number" in expected["number.json"] and "byte 0xe9 at line 3, column 16" in expected["byte.json"]
    monkeypatch.setattr(common.data, "_CHUNK_BYTES", chunk)
    assert {name: _outcome(tmp_path / name) for name in documents} == expected


def _outcome(path: Path) -> str:
    try:
        return repr(load_preferences(path)[0])
    except DataError as exc:
        return str(exc)
