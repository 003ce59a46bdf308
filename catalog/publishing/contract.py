"""The invocation contract (architecture.md §4) as pure functions: encode records, read replies, sign them.

A runnable listing reads JSON lines ``{"id": …, "input": …}`` on stdin and writes one JSON line per record
on stdout: ``{"id": …, "output": …}`` or ``{"id": …, "error": "…"}``. Publishing uses this to probe a
package or image (does it speak the contract at all?) and to run the producer's unit tests, whose outputs
are signed so that a later re-verification can tell whether the listing's behaviour changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from infra.errors import BadInput
from infra.text import holds_lone_surrogate, storable_text

PROBE_ID = "mlrepo-probe"
MAX_REPLY_LINE = 1 << 20


class ContractViolation(BadInput):
    """The program ran but did not answer as the invocation contract requires."""

    def __init__(self, message: str) -> None:
        super().__init__(f"entrypoint does not follow the invocation contract: {message}")


@dataclass(frozen=True)
class Reply:
    id: str
    output: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def canonical_json(value: Any) -> str:
    """One spelling per JSON value (sorted keys, no spaces), so equal outputs hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def signature(value: Any) -> str:
    """The reference signature of one output: SHA-256 of its canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest()


def encode_records(records: list[tuple[str, Any]]) -> bytes:
    return b"".join((canonical_json({"id": rid, "input": value}) + "\n").encode() for rid, value in records)


def parse_replies(stdout: bytes, expected_ids: list[str]) -> dict[str, Reply]:
    """Read the program's stdout; every expected id must be answered exactly once, with output or error.

    Lines that are not JSON objects are a violation (a model that prints debug text to stdout would
    corrupt every requester's results), as are unknown or repeated ids.
    """
    wanted = set(expected_ids)
    replies: dict[str, Reply] = {}
    for number, raw in enumerate(stdout.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(raw) > MAX_REPLY_LINE:
            raise ContractViolation(f"stdout line {number} is longer than {MAX_REPLY_LINE} bytes")
        try:
            obj = json.loads(raw, parse_constant=_not_json)
        except (ValueError, UnicodeDecodeError):
            raise ContractViolation(f"stdout line {number} is not JSON: {raw[:120]!r}") from None
        except RecursionError:
            raise ContractViolation(f"stdout line {number} is nested too deeply to read") from None
        if holds_lone_surrogate(obj):
            raise ContractViolation(f"stdout line {number} holds an unpaired UTF-16 surrogate escape")
        if not isinstance(obj, dict) or "id" not in obj:
            raise ContractViolation(f'stdout line {number} is not an object with an "id": {raw[:120]!r}')
        rid = str(obj["id"])
        if rid not in wanted:
            raise ContractViolation(f"stdout line {number} answers unknown id {rid!r}")
        if rid in replies:
            raise ContractViolation(f"id {rid!r} was answered twice")
        has_output, has_error = "output" in obj, "error" in obj
        if has_output == has_error:
            raise ContractViolation(f'the reply to {rid!r} must have exactly one of "output" or "error"')
        # An error is quoted in the step's reason: a NUL there failed the publication's write on PostgreSQL.
        error = storable_text(str(obj["error"])) if has_error else None
        replies[rid] = Reply(rid, obj.get("output"), error)
    missing = [rid for rid in expected_ids if rid not in replies]
    if missing:
        raise ContractViolation(f"no reply for {', '.join(map(repr, missing[:5]))}")
    return replies


def _not_json(name: str) -> Any:
    """NaN and Infinity, which Python writes but JSON does not allow (nor canonical_json)."""
    raise ValueError(f"{name} is not JSON")
