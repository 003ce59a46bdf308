"""The invocation contract codec: ids are positions, only answers to asked ids count."""

from __future__ import annotations

import json

from executor.contract import RecordOutcome, encode_records, parse_outputs
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
