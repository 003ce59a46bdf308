"""A fast yes/no check for the plain JSON Schemas that outputs are usually declared with.

Why: every output record of every job is validated against the listing's output schema, and jsonschema's
general validator costs ~30 us per record (0.34 s of a 10k-record job, a third of the job's overhead over
calling the model directly). The format schemas and most producer schemas use a handful of keywords;
for those, ``compile_check`` builds a predicate from nested closures that answers exactly as
``Draft202012Validator.is_valid`` does, in a few microseconds. A schema using any other keyword (enum,
const, combinators, references, ...) gets ``None`` and stays with jsonschema, so the fast path
never decides a case it does not fully understand. Error messages always come from jsonschema.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

# Keywords that only annotate: they never change whether a value is valid (content* included: draft
# 2020-12 makes them annotations, and jsonschema does not assert them).
ANNOTATIONS = frozenset({
    "$schema", "$id", "$comment", "title", "description", "examples", "default",
    "contentEncoding", "contentMediaType",
})  # fmt: skip
SUPPORTED = ANNOTATIONS | {
    "type", "properties", "required", "additionalProperties", "items",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minItems", "maxItems", "minLength", "maxLength", "pattern",
}  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    # As jsonschema: a float with no fractional part is an integer (1.0), a bool never is.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


TYPE_CHECKS: dict[str, Check] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "number": _is_number,
    "integer": _is_integer,
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
}


def _all(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]
    return lambda value: all(check(value) for check in checks)


def _type_check(declared: Any) -> Check | None:
    names = [declared] if isinstance(declared, str) else declared
    if not isinstance(names, list) or not names or any(name not in TYPE_CHECKS for name in names):
        return None
    tests = [TYPE_CHECKS[name] for name in names]
    return lambda value: any(test(value) for test in tests)


def _bound(limit: Any, holds: Callable[[float, float], bool]) -> Check | None:
    if not _is_number(limit) or (isinstance(limit, float) and not math.isfinite(limit)):
        return None
    return lambda value: not _is_number(value) or holds(value, limit)


def _size(limit: Any, kind: type, holds: Callable[[int, int], bool]) -> Check | None:
    if not _is_integer(limit) or limit < 0:
        return None
    return lambda value: not isinstance(value, kind) or holds(len(value), int(limit))


def _pattern_check(pattern: Any) -> Check | None:
    # ``re.search``, as jsonschema itself applies ``pattern``.
    if not isinstance(pattern, str):
        return None
    try:
        search = re.compile(pattern).search
    except re.error:
        return None
    return lambda value: not isinstance(value, str) or search(value) is not None


def _object_check(schema: Mapping[str, Any]) -> Check | None:
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    additional = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(required, list):
        return None
    if not all(isinstance(name, str) for name in required):
        return None
    compiled = {name: compile_check(sub) for name, sub in properties.items()}
    extra = compile_check(additional)
    if extra is None or any(check is None for check in compiled.values()):
        return None
    checks: dict[str, Check] = {name: check for name, check in compiled.items() if check is not None}
    undeclared: Check = extra

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        if any(name not in value for name in required):
            return False
        return all(checks.get(key, undeclared)(item) for key, item in value.items())

    return check


def compile_check(schema: Any) -> Check | None:
    """A predicate equal to jsonschema's ``is_valid`` for ``schema``, or None when ``schema`` uses
    anything outside ``SUPPORTED`` (the caller then validates with jsonschema)."""
    if schema is True:
        return lambda value: True
    if schema is False:
        return lambda value: False
    if not isinstance(schema, dict) or not set(schema) <= SUPPORTED:
        return None
    parts: list[Check | None] = []
    if "type" in schema:
        parts.append(_type_check(schema["type"]))
    if {"properties", "required", "additionalProperties"} & set(schema):
        parts.append(_object_check(schema))
    if "items" in schema:
        items = compile_check(schema["items"])
        parts.append(
            None
            if items is None
            else (lambda value, items=items: not isinstance(value, list) or all(map(items, value)))
        )
    for keyword, holds in (
        ("minimum", lambda v, lim: v >= lim),
        ("maximum", lambda v, lim: v <= lim),
        ("exclusiveMinimum", lambda v, lim: v > lim),
        ("exclusiveMaximum", lambda v, lim: v < lim),
    ):
        if keyword in schema:
            parts.append(_bound(schema[keyword], holds))
    for keyword, kind, holds in (
        ("minItems", list, lambda n, lim: n >= lim),
        ("maxItems", list, lambda n, lim: n <= lim),
        ("minLength", str, lambda n, lim: n >= lim),
        ("maxLength", str, lambda n, lim: n <= lim),
    ):
        if keyword in schema:
            parts.append(_size(schema[keyword], kind, holds))
    if "pattern" in schema:
        parts.append(_pattern_check(schema["pattern"]))
    if any(part is None for part in parts):
        return None
    checks = [part for part in parts if part is not None]
    return _all(checks) if checks else (lambda value: True)
