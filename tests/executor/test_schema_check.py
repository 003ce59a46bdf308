"""The fast output check must answer exactly as jsonschema does, and step aside when it cannot."""

from __future__ import annotations

import random
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from catalog.formats import FORMATS
from executor.schema_check import compile_check

TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"]


def random_schema(rng: random.Random, depth: int = 0) -> Any:
    """A schema built only from the keywords the fast check claims to understand."""
    if rng.random() < 0.08:
        return rng.choice([True, False])
    schema: dict[str, Any] = {}
    if rng.random() < 0.7:
        schema["type"] = rng.choice(TYPES) if rng.random() < 0.8 else rng.sample(TYPES, 2)
    if depth < 3 and rng.random() < 0.4:
        names = rng.sample(["a", "b", "c", "label"], rng.randint(1, 3))
        schema["properties"] = {name: random_schema(rng, depth + 1) for name in names}
        if rng.random() < 0.5:
            schema["required"] = rng.sample([*names, "z"], rng.randint(1, 2))
        if rng.random() < 0.5:
            schema["additionalProperties"] = rng.choice([False, True, random_schema(rng, depth + 1)])
    if depth < 3 and rng.random() < 0.25:
        schema["items"] = random_schema(rng, depth + 1)
    for keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if rng.random() < 0.15:
            schema[keyword] = rng.choice([0, 1, 0.5, -2, 10])
    for keyword in ("minItems", "maxItems", "minLength", "maxLength"):
        if rng.random() < 0.15:
            schema[keyword] = rng.randint(0, 3)
    if rng.random() < 0.1:
        schema["pattern"] = rng.choice(["^a", "b$", "[0-9]", "x+y"])
    if rng.random() < 0.1:
        schema["title"] = "annotated"
    return schema


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "bool", "null", "str"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, 1, -3, 2, 10, 11])
    if kind == "float":
        return rng.choice([0.5, 1.0, -2.0, 0.0, 10.0, 3.7])
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "null":
        return None
    if kind == "str":
        return rng.choice(["", "a", "ab", "abc", "xxy", "b", "a1", "naïve"])
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = rng.sample(["a", "b", "c", "label", "z", "q"], rng.randint(0, 4))
    return {key: random_value(rng, depth + 1) for key in keys}


def test_agrees_with_jsonschema_on_thousands_of_random_schemas_and_values() -> None:
    rng = random.Random(20261128)
    compared = valid = 0
    for _ in range(600):
        schema = random_schema(rng)
        check = compile_check(schema)
        assert check is not None, schema
        reference = Draft202012Validator(schema)
        for _ in range(25):
            value = random_value(rng)
            expected = reference.is_valid(value)
            assert check(value) == expected, (schema, value)
            compared += 1
            valid += expected
    assert compared == 15_000 and 0.1 < valid / compared < 0.9  # both verdicts are exercised


@pytest.mark.parametrize("ref", sorted(FORMATS))
def test_every_format_schema_takes_the_fast_path_with_the_same_verdicts(ref: str) -> None:
    schema = FORMATS[ref].schema
    check = compile_check(schema)
    assert check is not None
    reference = Draft202012Validator(schema)
    rng = random.Random(ref)
    values = [random_value(rng) for _ in range(300)] + [{}, [], "text", 3, None, {"label": "cat"}]
    for value in values:
        assert check(value) == reference.is_valid(value), value


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": ["a", "b"]},
        {"const": 1},
        {"anyOf": [{"type": "string"}]},
        {"$ref": "#/$defs/x", "$defs": {"x": {}}},
        {"patternProperties": {"^x": {}}},
        {"prefixItems": [{"type": "string"}]},
        {"type": "object", "properties": {"a": {"oneOf": [{}]}}},
        {"type": "array", "items": [{"type": "string"}]},
        {"type": "colour"},
        {"minimum": "3"},
        {"pattern": "("},
    ],
)
def test_anything_else_is_left_to_jsonschema(schema: dict[str, Any]) -> None:
    assert compile_check(schema) is None
