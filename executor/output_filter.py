"""Output filtering: what reaches the requester is only what the listing declares.

Each output is first projected onto the declared output schema (undeclared object properties dropped,
via ``catalog.formats.project_to_schema``), then validated against it; an output that still does not
match becomes a per-record error instead of being stored or shown. The validator is compiled once per
job because it runs for every record; plain schemas are checked by ``executor.schema_check`` (same
verdicts, ~10x faster), and the reasons of a rejection always come from jsonschema.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from jsonschema import Draft202012Validator

from catalog.formats import check_schema, payload_errors, project_to_schema
from executor.contract import RecordOutcome
from executor.schema_check import compile_check

MAX_REASONS = 3


class OutputFilter:
    def __init__(self, schema: dict[str, Any] | None) -> None:
        self.schema = schema
        self._validator = Draft202012Validator(schema) if schema is not None else None
        # The same verdict in microseconds for plain schemas (None: jsonschema decides every record).
        self._fast_check = compile_check(schema) if schema is not None else None

    @classmethod
    def for_listing(cls, output_format: str | None, output_schema: dict[str, Any] | None) -> OutputFilter:
        """The listing's exact schema, else its format's schema, else nothing to check against."""
        if output_schema is not None:
            return cls(output_schema)
        if output_format is not None:
            return cls(check_schema(output_format, None, "output_schema"))
        return cls(None)

    def apply(self, outcome: RecordOutcome) -> RecordOutcome:
        if not outcome.ok or self.schema is None or self._validator is None:
            return outcome
        value = project_to_schema(self.schema, outcome.output)
        valid = self._fast_check(value) if self._fast_check is not None else self._validator.is_valid(value)
        if valid:
            return replace(outcome, output=value)
        problems = payload_errors(self.schema, value, MAX_REASONS)
        error = "output does not match the declared schema: " + "; ".join(problems)
        return replace(outcome, output=None, error=error)
