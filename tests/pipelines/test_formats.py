"""The format vocabulary, listing I/O validation and the connection check (pure, no services)."""

from __future__ import annotations

import pytest

from catalog.formats import (
    FORMATS,
    check_connection,
    get_format,
    known_formats,
    normalize_format,
    payload_errors,
    project_to_schema,
    validate_listing_io,
)
from infra.errors import BadInput

IMAGE = FORMATS["image@1"].schema
BOXES_ITEMS = FORMATS["bounding-boxes@1"].schema["properties"]["boxes"]


def test_vocabulary_covers_the_documented_formats_with_versions() -> None:
    for name in (
        "text",
        "image",
        "video",
        "audio",
        "tabular",
        "vector",
        "class-label",
        "bounding-boxes",
        "predictions",
        "tokens",
        "image-crops",
    ):
        assert f"{name}@1" in known_formats()
    assert get_format("IMAGE").ref == "image@1"
    assert normalize_format(" image@1 ") == "image@1"
    assert normalize_format(None) is None


@pytest.mark.parametrize("ref", ["imag", "image@7", "", "text@one"])
def test_unknown_format_is_bad_input_listing_the_known_ones(ref: str) -> None:
    with pytest.raises(BadInput) as err:
        get_format(ref)
    assert err.value.details["known_formats"] == known_formats()
    if ref:
        assert "image@1" in err.value.message


def test_every_format_schema_accepts_its_own_example_and_rejects_garbage() -> None:
    examples = {
        "text@1": "hello",
        "image@1": {"data": "AAAA", "media_type": "image/png", "width": 1, "height": 1},
        "bounding-boxes@1": {"boxes": [{"x": 1, "y": 2, "width": 3, "height": 4, "confidence": 0.5}]},
        "predictions@1": {"predictions": [{"value": "cat", "location": {"x": 0, "y": 0}, "confidence": 0.9}]},
        "vector@1": [0.1, 0.2],
        "tabular@1": {"age": 3, "name": "x", "ok": True},
        "class-label@1": {"label": "cat", "confidence": 1.0},
    }
    for ref, value in examples.items():
        assert payload_errors(FORMATS[ref].schema, value) == [], ref
    assert payload_errors(FORMATS["image@1"].schema, {"data": "AAAA", "media_type": "audio/wav"})
    assert payload_errors(FORMATS["vector@1"].schema, [])
    errors = payload_errors(FORMATS["predictions@1"].schema, {"predictions": [{"value": 1, "confidence": 2}]})
    assert errors and errors[0].startswith("$.predictions[0].confidence")


def test_listing_io_is_normalised_and_defaults_to_the_format_schema() -> None:
    in_fmt, in_schema, out_fmt, out_schema = validate_listing_io("image", None, "class-label@1", None)
    assert (in_fmt, out_fmt) == ("image@1", "class-label@1")
    assert in_schema == IMAGE and out_schema == FORMATS["class-label@1"].schema
    assert validate_listing_io(None, None, None, None) == (None, None, None, None)


def test_listing_schema_must_refine_its_format() -> None:
    narrowed = {"type": "object", "required": ["label"], "properties": {"label": {"enum": ["cat", "dog"]}}}
    assert validate_listing_io(None, None, "class-label", narrowed)[3] == narrowed
    with pytest.raises(BadInput, match="does not refine format text@1"):
        validate_listing_io("text", {"type": "integer"}, None, None)
    with pytest.raises(BadInput, match="not a valid JSON Schema"):
        validate_listing_io("text", {"type": "strang"}, None, None)
    with pytest.raises(BadInput, match="without input_format"):
        validate_listing_io(None, {"type": "string"}, None, None)


def test_equal_formats_connect_and_different_formats_do_not() -> None:
    assert check_connection("image", None, "image@1", None).ok
    verdict = check_connection("bounding-boxes@1", None, "image@1", None)
    assert not verdict.ok and verdict.reasons == ("format bounding-boxes@1 does not match image@1",)
    assert not check_connection(None, None, "text@1", None).ok
    unknown = check_connection("weird@1", None, "text@1", None)
    assert not unknown.ok and "unknown data format" in unknown.reasons[0]


def test_same_format_still_needs_schema_compatibility() -> None:
    needs_image = {
        "type": "object",
        "required": ["boxes", "image"],
        "properties": {"boxes": BOXES_ITEMS, "image": IMAGE},
    }
    plain = check_connection("bounding-boxes@1", None, "bounding-boxes@1", needs_image)
    assert not plain.ok and plain.reasons == ("$.image: required by the consumer, not always produced",)
    assert check_connection("bounding-boxes@1", needs_image, "bounding-boxes@1", needs_image).ok

    small = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
    big = {"type": "array", "items": {"type": "number"}, "minItems": 384, "maxItems": 384}
    assert not check_connection("vector", small, "vector", big).ok
    assert check_connection("vector", big, "vector", big).ok
    assert check_connection("vector", big, "vector", None).ok

    labels = {"type": "object", "required": ["label"], "properties": {"label": {"enum": ["cat", "dog"]}}}
    only_cats = {"type": "object", "required": ["label"], "properties": {"label": {"const": "cat"}}}
    assert check_connection("class-label", only_cats, "class-label", labels).ok
    assert not check_connection("class-label", labels, "class-label", only_cats).ok


def test_projection_drops_undeclared_fields() -> None:
    schema = FORMATS["class-label@1"].schema
    assert project_to_schema(schema, {"label": "x", "secret": "leak", "scores": {"a": 1.0}}) == {
        "label": "x",
        "scores": {"a": 1.0},
    }
    boxes = {"boxes": [{"x": 0, "y": 0, "width": 1, "height": 1, "debug": "dropped"}], "extra": 1}
    assert project_to_schema(FORMATS["bounding-boxes@1"].schema, boxes) == {
        "boxes": [{"x": 0, "y": 0, "width": 1, "height": 1}]
    }
