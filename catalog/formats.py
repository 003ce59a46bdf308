"""The controlled vocabulary of data formats, their versioned JSON Schemas, and connection checks.

Every listing declares what it reads and what it writes as a *format reference* ``name@version``
(``image@1``) plus, optionally, an exact JSON Schema for the payload that must refine the format's own
schema. A small fixed vocabulary is what makes search facets and pipeline connections meaningful: two
listings that both say ``bounding-boxes@1`` agree on the envelope, and their exact schemas decide the rest.

A version is bumped only for a breaking change, so connections require the same name *and* version.
Pure module: no I/O, safe to import anywhere below the API.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from catalog.schema_fit import fit_reasons
from infra.errors import BadInput

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# --- building blocks shared by several formats (inlined, so every format schema is self-contained) ---

_PROBABILITY: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}


def _media(prefix: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Binary media travel as base64 with their media type; raw pixel formats add their dimensions."""
    return {
        "type": "object",
        "required": ["data", "media_type"],
        "properties": {
            "data": {"type": "string", "contentEncoding": "base64"},
            "media_type": {"type": "string", "pattern": f"^{prefix}/"},
            **extra,
        },
    }


_IMAGE = _media(
    "image",
    {"width": {"type": "integer", "minimum": 1}, "height": {"type": "integer", "minimum": 1}},
)
_BOX: dict[str, Any] = {
    "type": "object",
    "required": ["x", "y", "width", "height"],
    "properties": {
        "x": {"type": "number", "minimum": 0},
        "y": {"type": "number", "minimum": 0},
        "width": {"type": "number", "minimum": 0},
        "height": {"type": "number", "minimum": 0},
        "label": {"type": "string"},
        "confidence": _PROBABILITY,
    },
}
_LOCATION: dict[str, Any] = {
    "type": "object",
    "description": "Where a prediction applies: a box in an image, a character span, or an index.",
    "properties": {
        "x": {"type": "number", "minimum": 0},
        "y": {"type": "number", "minimum": 0},
        "width": {"type": "number", "minimum": 0},
        "height": {"type": "number", "minimum": 0},
        "start": {"type": "integer", "minimum": 0},
        "end": {"type": "integer", "minimum": 0},
        "index": {"type": "integer", "minimum": 0},
    },
}
_SCALAR = {"type": ["number", "string", "boolean", "null"]}


@dataclass(frozen=True, slots=True)
class DataFormat:
    name: str
    version: int
    title: str
    description: str
    schema: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def _format(name: str, version: int, title: str, description: str, schema: dict[str, Any]) -> DataFormat:
    full = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"mlrepo:format/{name}@{version}",
        "title": title,
        **schema,
    }
    Draft202012Validator.check_schema(full)
    return DataFormat(name, version, title, description, full)


_VOCABULARY: tuple[DataFormat, ...] = (
    _format("text", 1, "Text", "A UTF-8 string: a sentence, a document, a prompt.", {"type": "string"}),
    _format(
        "text-pair",
        1,
        "Text pair",
        "Two texts read together: question and context, premise and hypothesis, source and candidate.",
        {
            "type": "object",
            "required": ["text", "text_pair"],
            "properties": {"text": {"type": "string"}, "text_pair": {"type": "string"}},
        },
    ),
    _format(
        "tokens",
        1,
        "Tokens",
        "A tokenised text, with optional vocabulary ids and character offsets.",
        {
            "type": "object",
            "required": ["tokens"],
            "properties": {
                "tokens": {"type": "array", "items": {"type": "string"}},
                "ids": {"type": "array", "items": {"type": "integer"}},
                "offsets": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0},
                        "minItems": 2,
                        "maxItems": 2,
                    },
                },
            },
        },
    ),
    _format(
        "image",
        1,
        "Image",
        "One image as base64 bytes with its media type (image/png, image/x-raw-rgb…).",
        _IMAGE,
    ),
    _format(
        "image-crops",
        1,
        "Image crops",
        "Regions cut out of one image, each with the box it came from.",
        {
            "type": "object",
            "required": ["crops"],
            "properties": {
                "crops": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["image", "box"],
                        "properties": {"image": _IMAGE, "box": _BOX},
                    },
                }
            },
        },
    ),
    _format(
        "video",
        1,
        "Video",
        "A video clip as base64 bytes with its media type.",
        _media("video", {"fps": {"type": "number", "exclusiveMinimum": 0}}),
    ),
    _format(
        "audio",
        1,
        "Audio",
        "An audio clip as base64 bytes with its media type and sample rate.",
        _media("audio", {"sample_rate": {"type": "integer", "minimum": 1}}),
    ),
    _format(
        "tabular",
        1,
        "Tabular row",
        "One record of a table: column name to a scalar value.",
        {"type": "object", "additionalProperties": _SCALAR},
    ),
    _format(
        "time-series",
        1,
        "Time series",
        "A sequence of observations, optionally timestamped.",
        {
            "type": "object",
            "required": ["values"],
            "properties": {
                "values": {"type": "array", "items": {"type": "number"}},
                "timestamps": {"type": "array", "items": {"type": ["number", "string"]}},
            },
        },
    ),
    _format(
        "vector",
        1,
        "Vector",
        "A dense numeric vector (an embedding, a feature vector); a listing may fix its dimension.",
        {"type": "array", "items": {"type": "number"}, "minItems": 1},
    ),
    _format(
        "class-label",
        1,
        "Class label",
        "One label for the whole input, with its confidence and optionally every class's score.",
        {
            "type": "object",
            "required": ["label"],
            "properties": {
                "label": {"type": "string"},
                "confidence": _PROBABILITY,
                "scores": {"type": "object", "additionalProperties": {"type": "number"}},
            },
        },
    ),
    _format(
        "bounding-boxes",
        1,
        "Bounding boxes",
        "Boxes found in an image (pixels from the top-left corner); the source image may travel along "
        "so that a later step can crop it.",
        {
            "type": "object",
            "required": ["boxes"],
            "properties": {"boxes": {"type": "array", "items": _BOX}, "image": _IMAGE},
        },
    ),
    _format(
        "predictions",
        1,
        "Predictions",
        "Several predictions, each a value with where it applies and how confident it is.",
        {
            "type": "object",
            "required": ["predictions"],
            "properties": {
                "predictions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["value"],
                        "properties": {"value": {}, "location": _LOCATION, "confidence": _PROBABILITY},
                    },
                }
            },
        },
    ),
)

FORMATS: dict[str, DataFormat] = {f.ref: f for f in _VOCABULARY}
_LATEST: dict[str, DataFormat] = {}
for _f in _VOCABULARY:
    if _f.name not in _LATEST or _LATEST[_f.name].version < _f.version:
        _LATEST[_f.name] = _f


def known_formats() -> list[str]:
    """Every format reference, sorted: what an error message lists and what the API offers as choices."""
    return sorted(FORMATS)


def get_format(ref: str) -> DataFormat:
    """Look a format up by ``name@version``; a bare ``name`` means its latest version."""
    if not isinstance(ref, str) or not ref.strip():
        raise BadInput("a data format is required", known_formats=known_formats())
    text = ref.strip().lower()
    found = FORMATS.get(text) if "@" in text else _LATEST.get(text)
    if found is None:
        raise BadInput(
            f"unknown data format {ref!r}; known formats: {', '.join(known_formats())}",
            known_formats=known_formats(),
        )
    return found


def normalize_format(ref: str | None) -> str | None:
    """The canonical ``name@version`` stored on listings, so facets match exactly (``None`` stays)."""
    if ref is None:
        return None
    return get_format(ref).ref


def canonical_ref(ref: str) -> str:
    """``ref`` as ``name@version`` when it is in the vocabulary, else unchanged (for messages and
    comparisons over rows written before formats were checked)."""
    try:
        return get_format(ref).ref
    except BadInput:
        return ref


def format_aliases(ref: str) -> tuple[str, ...]:
    """Every spelling a stored listing may use for this format (a bare name means the latest version).

    Exact-match queries (search facets, the conditioning lookup) ask for all of them, so rows written
    before references were normalised are still found.
    """
    fmt = get_format(ref)
    return (fmt.ref, fmt.name) if _LATEST[fmt.name] is fmt else (fmt.ref,)


def check_schema(ref: str, schema: dict[str, Any] | None, side: str = "schema") -> dict[str, Any]:
    """A listing's exact payload schema: valid JSON Schema that refines its format (defaults to the format's).

    Refinement is required so that the format stays a promise: a listing saying ``image@1`` cannot
    accept or emit something that is not an image.
    """
    fmt = get_format(ref)
    if schema is None:
        return copy.deepcopy(fmt.schema)
    if not isinstance(schema, dict):
        raise BadInput(f"{side} must be a JSON object (a JSON Schema)")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise BadInput(f"{side} is not a valid JSON Schema: {exc.message}") from exc
    reasons = fit_reasons(schema, fmt.schema)
    if reasons:
        raise BadInput(
            f"{side} does not refine format {fmt.ref}: {'; '.join(reasons[:5])}", reasons=reasons[:20]
        )
    return schema


def validate_listing_io(
    input_format: str | None,
    input_schema: dict[str, Any] | None,
    output_format: str | None,
    output_schema: dict[str, Any] | None,
) -> tuple[str | None, dict[str, Any] | None, str | None, dict[str, Any] | None]:
    """Normalise and check a listing's declared input/output (the catalog calls this on every write).

    Returns ``(input_format, input_schema, output_format, output_schema)`` with canonical references and
    schemas filled from the format when none was given. A schema without a format is refused: the
    format is what search and pipelines key on.
    """
    result: list[Any] = []
    for side, ref, schema in (
        ("input", input_format, input_schema),
        ("output", output_format, output_schema),
    ):
        if ref is None or (isinstance(ref, str) and not ref.strip()):
            if schema is not None:
                raise BadInput(f"{side}_schema given without {side}_format", known_formats=known_formats())
            result += [None, None]
            continue
        canonical = normalize_format(ref)
        assert canonical is not None
        result += [canonical, check_schema(canonical, schema, f"{side}_schema")]
    return result[0], result[1], result[2], result[3]


def payload_errors(schema: dict[str, Any], value: Any, limit: int = 5) -> list[str]:
    """Why ``value`` does not satisfy ``schema`` (empty when it does), as short path-prefixed messages."""
    validator = Draft202012Validator(schema)
    errors = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        errors.append(f"{where}: {error.message[:200]}")
        if len(errors) >= limit:
            break
    return errors


def project_to_schema(schema: dict[str, Any] | bool, value: Any) -> Any:
    """Drop what a schema does not declare (object keys outside ``properties`` when it lists them).

    Why: a step's output reaches the next step and the requester only as declared — undeclared fields
    could leak data the producer never promised, and a strict consumer would reject them.
    """
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict) and "properties" in schema:
        props: dict[str, Any] = schema["properties"]
        additional = schema.get("additionalProperties", False)
        kept = {}
        for key, item in value.items():
            if key in props:
                kept[key] = project_to_schema(props[key], item)
            elif isinstance(additional, dict):
                kept[key] = project_to_schema(additional, item)
        return kept
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: project_to_schema(schema["additionalProperties"], v) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [project_to_schema(schema["items"], item) for item in value]
    return value


class HasIO(Protocol):
    """Anything with a listing's declared input and output (ORM row, indexed projection, test stub)."""

    input_format: str | None
    input_schema: dict[str, Any] | None
    output_format: str | None
    output_schema: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Connection:
    """The verdict on feeding one step's output into the next step's input."""

    ok: bool
    output_format: str | None
    input_format: str | None
    reasons: tuple[str, ...] = ()

    @property
    def formats_match(self) -> bool:
        return self.output_format is not None and self.output_format == self.input_format


def check_connection(
    output_format: str | None,
    output_schema: dict[str, Any] | None,
    input_format: str | None,
    input_schema: dict[str, Any] | None,
) -> Connection:
    """Can a payload of (output_format, output_schema) be fed to (input_format, input_schema)?

    Formats must be equal (same name and version); then every payload the producer's exact schema admits
    must satisfy the consumer's exact schema. Missing schemas default to the format's own schema.
    """
    if output_format is None or input_format is None:
        missing = "output" if output_format is None else "input"
        return Connection(False, output_format, input_format, (f"the {missing} format is not declared",))
    try:
        out_ref, in_ref = get_format(output_format).ref, get_format(input_format).ref
    except BadInput as exc:  # a row written before formats were checked: an open connection, not a crash
        return Connection(False, output_format, input_format, (exc.message,))
    if out_ref != in_ref:
        return Connection(False, out_ref, in_ref, (f"format {out_ref} does not match {in_ref}",))
    produced = output_schema if output_schema is not None else FORMATS[out_ref].schema
    accepted = input_schema if input_schema is not None else FORMATS[in_ref].schema
    reasons = fit_reasons(produced, accepted)
    return Connection(not reasons, out_ref, in_ref, tuple(reasons))


def listing_fits(producer: HasIO, consumer: HasIO) -> Connection:
    """``check_connection`` for two listings: the producer's output against the consumer's input."""
    return check_connection(
        producer.output_format, producer.output_schema, consumer.input_format, consumer.input_schema
    )
