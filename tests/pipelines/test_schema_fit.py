"""Conservative JSON Schema subsumption: it must never say yes to a payload the consumer rejects."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from catalog.formats import project_to_schema
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


# (producer, consumer, a value the producer may emit that the consumer rejects)
UNCOMPARED_CONSUMERS = [
    (
        {"type": "array", "items": {"type": "integer"}},
        {"type": "array", "prefixItems": [{"type": "string"}]},
        [1],
    ),
    ({"type": "string"}, {"type": "string", "not": {"const": ""}}, ""),
    (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "additionalProperties": {"type": "integer"},
        },
        {"type": "object", "patternProperties": {"^b": {"type": "string"}}},
        {"b": 1},
    ),
    ({"type": "object"}, {"type": "object", "propertyNames": {"maxLength": 2}}, {"long": 1}),
    ({"type": "array"}, {"type": "array", "contains": {"type": "string"}}, []),
    ({"type": "object"}, {"type": "object", "dependentRequired": {"a": ["b"]}}, {"a": 1}),
    (
        {"type": "object"},
        {"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}},
        {"a": 1},
    ),
    ({"type": "integer"}, {"oneOf": [{"type": "number"}, {"type": "integer"}]}, 1),
    (
        {"type": "object"},
        {"oneOf": [{"type": "object", "properties": {"a": {}}}, {"type": "object"}]},
        {},
    ),
]


@pytest.mark.parametrize(("producer", "consumer", "witness"), UNCOMPARED_CONSUMERS)
def test_consumer_keywords_it_cannot_compare_are_a_no(
    producer: dict, consumer: dict, witness: object
) -> None:
    """Ignoring a consumer's keyword said yes to payloads the run then rejected (the witness)."""
    assert Draft202012Validator(producer).is_valid(witness)
    assert not Draft202012Validator(consumer).is_valid(witness)
    assert fit_reasons(producer, consumer)


def test_the_same_schema_fits_itself_and_disjoint_one_of_branches_still_fit() -> None:
    for _, consumer, _ in UNCOMPARED_CONSUMERS:
        assert fit_reasons(consumer, consumer) == []
    either = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    assert fit_reasons({"type": "string", "maxLength": 3}, either) == []
    assert fit_reasons({"type": "array", "items": {"type": "string"}}, either) == []


def test_a_producers_branches_travel_as_its_own_properties_project_them() -> None:
    """Projection reads a schema's own ``properties``, never its anyOf branches': judging a branch as if
    its properties were the ones kept said yes to payloads the consumer then rejected."""
    closed = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    loose = {"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}}]}
    emitted = project_to_schema(loose, {"a": "x", "b": 1})  # valid for the branch; "b" is not dropped
    assert not Draft202012Validator(closed).is_valid(emitted)
    assert fit_reasons(loose, closed)

    needs_b = {"type": "object", "required": ["b"]}
    kept_a = {
        "type": "object",
        "properties": {"a": {}},
        "anyOf": [{"required": ["b"], "properties": {"b": {}}}],
    }
    emitted = project_to_schema(kept_a, {"a": 1, "b": 2})  # "b" is dropped: only "a" is declared
    assert not Draft202012Validator(needs_b).is_valid(emitted)
    assert fit_reasons(kept_a, needs_b)

    # Branches that only narrow what the schema's own properties keep still fit.
    tagged = {
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"type": "string"}, "n": {"type": "integer"}},
        "additionalProperties": False,
        "anyOf": [{"required": ["n"]}, {"properties": {"kind": {"const": "none"}}}],
    }
    assert fit_reasons(tagged, {"type": "object", "required": ["kind"]}) == []


def test_a_consumers_branches_add_to_its_own_constraints_not_replace_them() -> None:
    """A payload must satisfy the consumer's own keywords *and* a branch: merging a branch over them
    (its ``required`` or ``properties`` replacing the consumer's) forgot the consumer's own."""
    producer = {"type": "object", "required": ["a", "b"], "properties": {"a": {"type": "integer"}, "b": {}}}
    needs_c = {"type": "object", "required": ["c"], "anyOf": [{"required": ["b"]}]}
    a_is_text = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "anyOf": [{"properties": {"b": {}}}],
    }
    for consumer in (needs_c, a_is_text):
        assert not Draft202012Validator(consumer).is_valid({"a": 1, "b": 2})
        assert fit_reasons(producer, consumer)
    assert fit_reasons(producer, {"type": "object", "required": ["a"], "anyOf": [{"required": ["b"]}]}) == []
    assert fit_reasons({"type": "string"}, {"anyOf": [False]})  # a false branch accepts nothing


def test_fixed_values_are_checked_against_the_consumer_with_all_its_references() -> None:
    """A producer's fixed values meeting a consumer property that refers elsewhere in the consumer's
    schema (``definitions``, or any pointer) crashed the check instead of answering."""
    consumer = {
        "definitions": {"n": {"type": "integer"}},
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"$ref": "#/definitions/n"}}}},
    }
    fixed = {"type": "object", "properties": {"a": {"const": {"b": 1}}}}
    assert fit_reasons(fixed, consumer) == []
    assert fit_reasons({"type": "object", "properties": {"a": {"const": {"b": "x"}}}}, consumer)
    remote = {"type": "object", "properties": {"b": {"$ref": "https://example.com/n.json"}}}
    assert fit_reasons({"const": {"b": 1}}, remote)  # cannot be resolved: no, not a crash


def test_recursive_schemas_get_an_answer_not_a_crash() -> None:
    """A tree of labels refers to itself; comparing two such schemas recursed until Python gave up."""
    tree = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
    }
    labelled = {**tree, "required": ["label"]}
    assert isinstance(fit_reasons(labelled, tree), list)
    assert fit_reasons(tree, {**tree, "properties": {**tree["properties"], "label": {"type": "integer"}}})
