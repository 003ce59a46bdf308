"""The invocation contract codec: ids are positions, only answers to asked ids count."""

from __future__ import annotations

import json

from executor.contract import RecordOutcome, encode_records, parse_outputs


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
