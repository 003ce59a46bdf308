"""Checks of what a requester asks a job to run on: each input against the listing's input schema
(JSON Schema, compiled once, as a dataset's records are checked one by one).

Separate from ``executor.jobs`` because training (``executor.training``) checks its examples with the
same functions, and a check raises its ``BadInput`` before anything is queued.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator

from catalog.formats import payload_errors
from executor.schema_check import compile_check
from infra.errors import BadInput


def check_against_input_schema(input_schema: dict[str, Any] | None, values: dict[str, Any]) -> None:
    """Each of ``values`` (named by its place in the request) must match the listing's input schema."""
    check = input_check(input_schema)
    for place, value in values.items():
        check(place, value, place)


def input_check(input_schema: dict[str, Any] | None) -> Callable[[str, Any, str], None]:
    """A check of one value against the listing's input schema (compiled once: a dataset's records are
    checked one by one); it raises BadInput naming the value's ``place`` and the request ``field``."""
    if input_schema is None:
        return lambda place, value, field: None
    validator = Draft202012Validator(input_schema)
    fast = compile_check(input_schema)

    def check(place: str, value: Any, field: str) -> None:
        if fast(value) if fast is not None else validator.is_valid(value):
            return
        problems = payload_errors(input_schema, value, limit=3)
        if problems:
            raise BadInput(
                f"{place} does not match the listing's input schema: {'; '.join(problems)}", field=field
            )

    return check
