"""The invocation contract of architecture.md §4, spoken from the host side.

stdin: one ``{"id": …, "input": …}`` per line; stdout: one ``{"id": …, "output": …}`` or
``{"id": …, "error": …}`` per line. Ids sent are the records' positions in the job's input, so answers
can be matched however the entrypoint orders them; anything a program prints that is not an answer to a
record it was given is ignored (and counted), never trusted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from catalog.text_checks import storable_text

MAX_ERROR_CHARS = 2000
NOT_JSON_NUMBER = "the output contains NaN or Infinity, which JSON does not allow"


def reject_constant(name: str) -> Any:
    """``parse_constant`` for ``json.loads``: Python writes NaN and Infinity, but they are not JSON
    (PostgreSQL refuses to store them, and clients cannot parse them)."""
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class RecordOutcome:
    """What happened to one input record: an output, or an error with its reason."""

    output: Any = None
    error: str | None = None
    timed_out: bool = False
    # A notebook listing's executed notebook for this record (nbformat 4, cells with their outputs).
    notebook: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ParsedOutput:
    outcomes: dict[int, RecordOutcome]
    ignored_lines: int


def encode_records(records: Iterable[tuple[int, Any]]) -> bytes:
    return b"".join(
        json.dumps({"id": index, "input": value}, separators=(",", ":")).encode() + b"\n"
        for index, value in records
    )


def parse_outputs(stdout: bytes, expected: Sequence[int], keep_notebooks: bool = False) -> ParsedOutput:
    """Answers for the ``expected`` ids; the first answer per id wins, everything else is ignored.

    ``keep_notebooks``: the program is a notebook's runner, whose replies also carry the executed notebook
    (``notebook``); any other program's extra fields are dropped like everything undeclared."""
    wanted = set(expected)
    outcomes: dict[int, RecordOutcome] = {}
    ignored = 0
    constants: list[str] = []  # NaN / Infinity met in the current line (parsed as None, then refused)
    decoder = json.JSONDecoder(parse_constant=lambda name: constants.append(name))
    for line in stdout.splitlines():
        if not line.strip():
            continue
        constants.clear()
        try:
            message = decoder.decode(line.decode("utf-8"))
        except ValueError:
            ignored += 1
            continue
        if not isinstance(message, dict):
            ignored += 1
            continue
        record_id = message.get("id")
        if isinstance(record_id, bool) or not isinstance(record_id, int) or record_id not in wanted:
            ignored += 1
            continue
        if record_id in outcomes:
            ignored += 1
            continue
        executed = message.get("notebook") if keep_notebooks else None
        notebook = executed if isinstance(executed, dict) else None
        if constants:
            outcomes[record_id] = RecordOutcome(error=NOT_JSON_NUMBER, notebook=notebook)
        elif "error" in message and message["error"] is not None:
            error = storable_text(str(message["error"])[:MAX_ERROR_CHARS])
            outcomes[record_id] = RecordOutcome(error=error, notebook=notebook)
        elif "output" in message:
            outcomes[record_id] = RecordOutcome(output=message["output"], notebook=notebook)
        else:
            ignored += 1
    return ParsedOutput(outcomes, ignored)
