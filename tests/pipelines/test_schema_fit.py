"""Conservative JSON Schema subsumption: it must never say yes to a payload the consumer rejects."""

from __future__ import annotations

from catalog.schema_fit import fit_reasons


def test_types_integer_is_a_number_but_not_the_reverse() -> None:
    assert fit_reasons({"type": "integer"}, {"type": "number"}) == []
    assert fit_reasons({"type": "number"}, {"type": "integer"})
    assert fit_reasons({}, {"type": "string"})  # an unconstrained producer may emit anything
    assert fit_reasons({"type": "string"}, {}) == []


def test_numeric_and_length_bounds_must_nest() -> None:
    assert fit_reasons({"type": "number", "minimum": 0, "maximum": 1}, {"type": "number", "minimum": 0}) == []
    assert fit_reasons({"type": "number"}, {"type": "number", "maximum": 1})
    assert fit_reasons({"type": "number", "minimum": 0}, {"type": "number", "exclusiveMinimum": 0})
    assert (
        fit_reasons({"type": "number", "exclusiveMinimum": 0}, {"type": "number", "exclusiveMinimum": 0})
        == []
    )
    assert fit_reasons({"type": "string", "maxLength": 10}, {"type": "string", "maxLength": 5})


def test_enums_are_checked_value_by_value() -> None:
    assert fit_reasons({"enum": ["a", "b"]}, {"type": "string", "pattern": "^[ab]$"}) == []
    assert fit_reasons({"enum": ["a", "c"]}, {"enum": ["a", "b"]}) == [
        "$: the consumer rejects the value 'c'"
    ]
    assert fit_reasons({"type": "string"}, {"enum": ["a"]})


def test_objects_required_and_closed_consumers() -> None:
    producer = {
        "type": "object",
        "required": ["a"],
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
    }
    assert fit_reasons(producer, {"type": "object", "required": ["a"]}) == []
    assert fit_reasons(producer, {"type": "object", "required": ["b"]})
    closed = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    assert fit_reasons(producer, closed) == ["$.b: the consumer accepts nothing here"]
    open_map = {"type": "object", "additionalProperties": {"type": "number"}}
    assert fit_reasons(open_map, {"type": "object", "properties": {"x": {"type": "string"}}})


def test_any_of_and_local_refs() -> None:
    either = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert fit_reasons({"type": "integer"}, either) == []
    assert fit_reasons(either, {"type": "string"})
    with_ref = {"$defs": {"s": {"type": "string"}}, "type": "array", "items": {"$ref": "#/$defs/s"}}
    assert fit_reasons(with_ref, {"type": "array", "items": {"type": "string"}}) == []
    assert fit_reasons(with_ref, {"type": "array", "items": {"type": "integer"}})
