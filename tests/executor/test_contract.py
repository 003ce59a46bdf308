"""The invocation contract codec: ids are positions, only answers to asked ids count."""

from __future__ import annotations

import json

from executor.contract import (
    MAX_OUTPUT_DEPTH,
    NOT_UNICODE,
    TOO_DEEP,
    RecordOutcome,
    encode_records,
    parse_outputs,
)
from executor.datasets import parse_json_lines


def test_encode_records_writes_one_json_line_per_record() -> None:
    data = encode_records([(0, {"text": "a"}), (5, [1, 2])])
    lines = [json.loads(line) for line in data.splitlines()]
    assert lines == [{"id": 0, "input": {"text": "a"}}, {"id": 5, "input": [1, 2]}]


def test_parse_outputs_matches_ids_in_any_order_and_ignores_noise() -> None:
    stdout = b"\n".join(
        [
            b'{"id": 2, "output": {"label": "b"}}',
            b"loading weights...",
            b'{"id": 0, "output": 1}',
            b'{"id": 0, "output": 2}',
            b'{"id": 9, "output": "not asked"}',
            b'{"id": true, "output": "bool is not an id"}',
            b'{"id": 1, "error": "bad input"}',
            b"[1, 2]",
        ]
    )
    parsed = parse_outputs(stdout, [0, 1, 2, 3])
    assert parsed.outcomes == {
        0: RecordOutcome(output=1),
        1: RecordOutcome(error="bad input"),
        2: RecordOutcome(output={"label": "b"}),
    }
    assert parsed.ignored_lines == 5


def test_an_output_with_nan_or_infinity_is_an_error_of_its_record() -> None:
    """Python's json.dumps writes NaN and Infinity, which are not JSON: PostgreSQL refused to store such a
    result (the whole job failed with a database error) while SQLite kept it and served it as is."""
    stdout = b"\n".join(
        [
            b'{"id": 0, "output": {"score": NaN}}',
            b'{"id": 1, "output": [1, -Infinity]}',
            b'{"id": 2, "output": {"score": 0.5}}',
        ]
    )
    parsed = parse_outputs(stdout, [0, 1, 2])
    assert parsed.outcomes[2] == RecordOutcome(output={"score": 0.5})
    for index in (0, 1):
        assert not parsed.outcomes[index].ok
        assert "NaN or Infinity" in (parsed.outcomes[index].error or "")


def test_json_lines_saved_with_a_byte_order_mark_are_read() -> None:
    """Files saved by Windows tools often start with a UTF-8 byte order mark; the first line was then
    "not JSON", and the upload (or dataset) refused."""
    assert parse_json_lines(b'\xef\xbb\xbf"a"\n{"input": "b"}\n', "the file") == ["a", {"input": "b"}]


def test_answers_no_database_could_store_are_errors_of_their_records() -> None:
    """NUL (PostgreSQL refuses it in text) and a lone surrogate (no driver encodes it) in an error are
    replaced; an output holding a lone surrogate, or nested deeper than the limit (up to deeper than the
    JSON decoder recurses), is an error of its record; a well-paired surrogate escape is a character."""
    deep = b"[" * 100_000 + b"]" * 100_000
    nested = b"[" * (MAX_OUTPUT_DEPTH + 1) + b"]" * (MAX_OUTPUT_DEPTH + 1)
    stdout = b"\n".join(
        [
            b'{"id": 0, "error": "bad\\u0000input \\udfff"}',
            b'{"id": 1, "output": {"label": "\\ud800"}}',
            b'{"id": 2, "output": ' + deep + b"}",
            b'{"id": 3, "output": ' + nested + b"}",
            b'{"id": 4, "output": {"label": "\\ud83d\\ude00", "wide": [' + b"[[1]]," * 200 + b"[[1]]]}}",
            b'{"no id": 5, "output": ' + deep + b"}",
        ]
    )
    parsed = parse_outputs(stdout, range(6))
    assert parsed.outcomes[0] == RecordOutcome(error="bad\ufffdinput \ufffd")
    assert parsed.outcomes[1] == RecordOutcome(error=NOT_UNICODE)
    assert parsed.outcomes[2] == parsed.outcomes[3] == RecordOutcome(error=TOO_DEEP)
    assert (
        parsed.outcomes[4].output["label"] == "\U0001f600" and len(parsed.outcomes[4].output["wide"]) == 201
    )
    assert 5 not in parsed.outcomes and parsed.ignored_lines == 1
