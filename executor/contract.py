"""The invocation contract of architecture.md §4, spoken from the host side.

stdin: one ``{"id": …, "input": …}`` per line; stdout: one ``{"id": …, "output": …}`` or
``{"id": …, "error": …}`` per line. Ids sent are the records' positions in the job's input, so answers
can be matched however the entrypoint orders them; anything a program prints that is not an answer to a
record it was given is ignored (and counted), never trusted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from infra.text import holds_lone_surrogate, storable_text

MAX_ERROR_CHARS = 2000
NOT_JSON_NUMBER = "the output contains NaN or Infinity, which JSON does not allow"
# An answer nested deeper than the JSON decoder recurses (under 1000 levels) raised RecursionError, and
# the whole job failed as an internal error. 100 levels leave room for everything that walks an output
# after it with recursion (the schema check, the outputs writer, the API's serializer).
MAX_OUTPUT_DEPTH = 100
TOO_DEEP = f"the output is nested more than {MAX_OUTPUT_DEPTH} levels deep"
NOT_UNICODE = "the output holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not text"
# The id of an answer too deep to decode, read from its start as the contract writes it.
_LEADING_ID = re.compile(rb'\s*\{\s*"id"\s*:\s*(\d{1,18})\s*[,}]')
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


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
        except RecursionError:
            constants.clear()
            message = _too_deep_answer(line)
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
            problem = _unusable(line, message["output"])
            kept = RecordOutcome(output=message["output"], notebook=notebook)
            outcomes[record_id] = kept if problem is None else replace(kept, output=None, error=problem)
        else:
            ignored += 1
    return ParsedOutput(outcomes, ignored)


def _too_deep_answer(line: bytes) -> dict[str, Any]:
    """An answer the decoder gave up on for its depth: an error of its record when its id can be read."""
    found = _LEADING_ID.match(line)
    return {"id": int(found.group(1)), "error": TOO_DEEP} if found else {}


def _unusable(line: bytes, output: Any) -> str | None:
    """Why an output cannot be kept, or None. Both checks are skipped by a cheap test of the raw line
    for almost every answer."""
    if line.count(b"[") + line.count(b"{") > MAX_OUTPUT_DEPTH and _depth(output) > MAX_OUTPUT_DEPTH:
        return TOO_DEEP
    if _SURROGATE_ESCAPE.search(line) and holds_lone_surrogate(output):
        return NOT_UNICODE
    return None


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest
