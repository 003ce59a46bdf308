"""What a producer may say about a listing, validated field by field.

One model serves the bulk-import line format (architecture.md §3), the GraphQL create/update mutations and
the demo catalog, so a listing is checked the same way whichever door it comes through. Every problem
becomes a ``BadInput`` whose message names the field. Unknown fields are not an error — catalogs from other
hubs carry extra keys — they are kept in the listing's ``extra`` JSON and reported back as warnings.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from catalog.enums import ListingKind, Visibility
from infra.errors import BadInput, Conflict

MAX_TAGS = 50
MAX_TAG_CHARS = 200
MAX_SUBCATEGORIES = 20
MAX_SHARES = 200
MAX_EXAMPLES = 50
MAX_EXTRA_BYTES = 20_000
# One version rule for every door (GraphQL, bulk import, manifests): ``1.2.3``, optionally ``-pre`` and/or
# ``+build``, at most ``MAX_VERSION_CHARS`` (the column). Publishing counts patch numbers up from it
# (``listing_writer.next_patch``), which a free-form version such as ``banana`` gives nothing to count from.
VERSION_PATTERN = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
MAX_VERSION_CHARS = 50
VERSION_RULE = f"must look like 1.2.3 (optionally -pre and/or +build), at most {MAX_VERSION_CHARS} characters"
ARTIFACT_REFERENCE = re.compile(r"artifact:sha256:[0-9a-f]{64}")
FORMAT_PATTERN = re.compile(r"^[a-z][a-z0-9_\-]{0,47}(@[0-9A-Za-z.]{1,12})?$")
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
MAX_SIZE_BYTES = 2**63 - 1  # the size_bytes column is a signed 64-bit integer
_SIZE_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Characters that show nothing (zero-width spaces and joiners, direction marks, word joiner, byte order
# mark, soft hyphen): a name or category of only these, or padded with them, looked empty or identical
# to another one. Trimmed from the ends like whitespace.
_INVISIBLE_EDGES = re.compile(
    r"^[\s\u00ad\u200b-\u200f\u2060-\u2064\ufeff]+|[\s\u00ad\u200b-\u200f\u2060-\u2064\ufeff]+$"
)
# Bidirectional embeddings, overrides and isolates reorder how the rest of a line displays ("abc\u202edef"
# shows as "abcfed"): refused in single-line fields (names, categories, tags), which need none.
_BIDI_CONTROLS = re.compile(r"[\u202a-\u202e\u2066-\u2069]")

# Field name in the input → column of ``infra.tables.Listing`` (where they differ).
COLUMN_OF = {
    "latency_ms": "latency_p50_ms",
    "latency_p95_ms": "latency_p95_ms",
    "size": "size_bytes",
    "timeout": "timeout_s",
    "producer": "producer_name",
}
# Fields that are not plain columns: the service handles them itself.
NON_COLUMN_FIELDS = frozenset({"subcategory", "subcategories", "shared_with", "owner"})


# The smallest sandbox a run gets (MiB): a Python interpreter does not start in less. Every door that takes
# resources (a listing's suggestion, a manifest, publishing requirements, a job's request) refuses less
# with the field named, instead of one refusing ``cpu: 0`` while another silently raised ``memory_mb: 0``.
MIN_MEMORY_MB = 64


def check_resource_amounts(values: Mapping[str, float | None], name: Callable[[str], str]) -> None:
    """The rule for hardware someone asks for or has: cpu > 0, memory_mb ≥ ``MIN_MEMORY_MB``, gpu ≥ 0
    (``Resources``' bounds below). One function for a job's ``resources`` and search's hardware-fit
    facet, so the facet accepts the amounts a job would and no others (it took ``cpu: 0``, which no job
    can run on). ``name`` spells a key as the caller's input does (``resources.memoryMb``)."""
    cpu, memory_mb, gpu = values.get("cpu"), values.get("memory_mb"), values.get("gpu")
    if cpu is not None and cpu <= 0:
        raise BadInput(f"{name('cpu')} must be more than 0: a job needs some CPU", field=name("cpu"))
    if memory_mb is not None and memory_mb < MIN_MEMORY_MB:
        raise BadInput(
            f"{name('memory_mb')} must be at least {MIN_MEMORY_MB} (MiB): the smallest sandbox a job runs in",
            field=name("memory_mb"),
        )
    if gpu is not None and gpu < 0:
        raise BadInput(f"{name('gpu')} must be a non-negative number; got {gpu!r}", field=name("gpu"))


class Resources(BaseModel):
    """Suggested hardware. ``memory_mb`` is mebibytes; ``gpu`` is a count of devices."""

    model_config = ConfigDict(extra="forbid")

    cpu: float | None = Field(None, gt=0, le=1024)
    memory_mb: int | None = Field(None, ge=MIN_MEMORY_MB, le=16_000_000)
    gpu: int | None = Field(None, ge=0, le=64)


def _clean_text(value: str, max_len: int, *, single_line: bool = True) -> str:
    value = _INVISIBLE_EDGES.sub("", value) if single_line else value.strip()
    if len(value) > max_len:
        raise ValueError(f"is longer than {max_len} characters ({len(value)})")
    if single_line and ("\n" in value or "\r" in value):
        raise ValueError("must be a single line")
    if single_line and _BIDI_CONTROLS.search(value):
        raise ValueError("contains bidirectional control characters (they reorder how the text displays)")
    if _CONTROL_CHARS.search(value):
        raise ValueError("contains control characters")
    return value


def _clean_list(values: Any, max_items: int, max_len: int, *, names: bool = False) -> list[str]:
    """Distinct, stripped entries. Words (tags, subcategories) are distinct regardless of case, and an
    empty one is dropped; ``names`` (account names or ids) are kept as given (ids are case-sensitive;
    the service matches a name in any case, as accounts are unique regardless of it), and an
    empty one is refused: sharing with ["rita", "Rita"] shared with rita alone, and [""] with nobody."""
    if isinstance(values, str):  # "a, b, c" is how people type tags on a command line
        values = [v for v in values.split(",")]
    if not isinstance(values, list | tuple):
        raise ValueError("must be a list of strings")
    seen: dict[str, None] = {}
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"must be a list of strings; found {type(value).__name__}")
        cleaned = _clean_text(value, max_len)
        if names and not cleaned:
            raise ValueError("an account name is empty")
        key = cleaned if names else cleaned.lower()
        if cleaned and key not in {s if names else s.lower() for s in seen}:
            seen[cleaned] = None
    if len(seen) > max_items:
        raise ValueError(f"has more than {max_items} entries ({len(seen)})")
    return list(seen)


def parse_size(value: Any) -> int | None:
    """Bytes from an int or a human string ("1.5 GB", "300MiB")."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("must be a number of bytes or a size like '1.5 GB'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return _storable_size(value)
    if isinstance(value, str):
        match = _SIZE_PATTERN.match(value)
        if match:
            unit = (match.group(2) or "b").lower()
            if unit in _SIZE_UNITS:
                return _storable_size(float(match.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"must be a number of bytes or a size like '1.5 GB'; got {value!r}")


def _storable_size(value: int | float) -> int:
    """A size the BIGINT column holds: a larger one (1e300, "1e20 TB") failed the INSERT as an internal
    error instead of naming the field, and NaN or infinity has no byte count at all."""
    if (isinstance(value, float) and not math.isfinite(value)) or value > MAX_SIZE_BYTES:
        raise ValueError(f"must be a finite number of bytes up to {MAX_SIZE_BYTES}; got {value!r}")
    return int(value)


def check_version(value: str | None) -> str | None:
    """``value`` when it follows the one version rule (``VERSION_RULE``), else ``ValueError``."""
    if value is not None and (len(value) > MAX_VERSION_CHARS or not VERSION_PATTERN.match(value)):
        raise ValueError(f"{VERSION_RULE}; got {value!r}")
    return value


def version_precedence(version: str) -> tuple[Any, ...] | None:
    """Semantic-versioning precedence of a version following ``VERSION_RULE`` (build metadata ignored, a
    pre-release before its release); None for one that does not (rows older than the rule)."""
    if not VERSION_PATTERN.match(version):
        return None
    core, _, pre = version.split("+", 1)[0].partition("-")
    numbers = tuple(int(part) for part in core.split("."))
    if not pre:
        return (numbers, 1, ())
    # Numeric identifiers sort numerically and before alphanumeric ones.
    identifiers = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (numbers, 0, identifiers)


def check_version_newer(version: str, current: str | None) -> None:
    """A new version must come after the listing's current one: it becomes the listing's version, so an
    older number (a back-port, a typo) made the listing show and count patch numbers from it."""
    if current is None or version == current:
        return
    new, now = version_precedence(version), version_precedence(current)
    if new is not None and now is not None and new <= now:
        raise Conflict(
            f"version {version} is not newer than the listing's current version {current}; "
            "a new version must come after it",
            field="version",
        )


def check_json_schema(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON Schema object")
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise ValueError(f"is not a valid JSON Schema at {where}: {exc.message}") from None
    return value


def check_format(value: str | None) -> str | None:
    """A data format name from the controlled vocabulary (``catalog.formats`` when present)."""
    if value is None:
        return None
    value = value.strip().lower()
    if not value:
        return None
    if not FORMAT_PATTERN.match(value):
        raise ValueError(f"must be a format name like 'text' or 'bounding-boxes'; got {value!r}")
    return value


class ListingFields(BaseModel):
    """Every field a listing may carry; all optional here (this is also the shape of an update)."""

    model_config = ConfigDict(
        extra="allow", validate_by_name=True, validate_by_alias=True, str_strip_whitespace=False
    )

    name: str | None = None
    kind: ListingKind | None = None
    category: str | None = None
    subcategory: str | None = None
    subcategories: list[str] | None = None
    description: str | None = None
    documentation: str | None = None
    framework: str | None = None
    tags: list[str] | None = None
    license: str | None = None

    accuracy: float | None = Field(None, ge=0.0, le=1.0)
    accuracy_metric: str | None = Field(None, validation_alias="metric")
    accuracy_dataset: str | None = Field(None, validation_alias="dataset")
    latency_ms: float | None = Field(None, ge=0.0, le=86_400_000, validation_alias="latency_p50_ms")
    latency_p95_ms: float | None = Field(None, ge=0.0, le=86_400_000)
    size: int | None = Field(None, validation_alias="size_bytes")

    input_format: str | None = None
    output_format: str | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None

    resources: Resources | None = None
    training_resources: Resources | None = None
    timeout: float | None = Field(None, gt=0.0, le=86_400, validation_alias="timeout_s")
    examples: list[dict[str, Any]] | None = Field(None, max_length=MAX_EXAMPLES)
    storage_location: str | None = Field(None, validation_alias="storage")
    producer: str | None = None
    owner: str | None = None

    visibility: Visibility | None = None
    shared_with: list[str] | None = None
    version: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_aliases_and_nested_accuracy(cls, data: Any) -> Any:
        """Accept both the alias and the field name (``metric`` or ``accuracy_metric``), and an
        ``accuracy`` given as ``{value, metric, dataset}``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, str) and alias in data:
                if name in data and data[alias] != data[name]:
                    raise ValueError(f"give either {name!r} or {alias!r}, not both")
                data.setdefault(name, data.pop(alias))
        accuracy = data.get("accuracy")
        if isinstance(accuracy, dict):
            unknown = set(accuracy) - {"value", "metric", "dataset"}
            if unknown:
                raise ValueError(f"accuracy object has unknown keys {sorted(unknown)}")
            data["accuracy"] = accuracy.get("value")
            for key in ("metric", "dataset"):
                if accuracy.get(key) is not None:
                    data[key] = accuracy[key]
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = _clean_text(value, 200)
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("category")
    @classmethod
    def _category(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = _clean_text(value, 100)
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("accuracy_metric")
    @classmethod
    def _metric(cls, value: str | None) -> str | None:
        return (_clean_text(value, 64) or None) if value is not None else None

    @field_validator("subcategory", "framework", "license", "owner")
    @classmethod
    def _short_text(cls, value: str | None) -> str | None:
        return (_clean_text(value, 100) or None) if value is not None else None

    @field_validator("accuracy_dataset", "producer")
    @classmethod
    def _dataset(cls, value: str | None) -> str | None:
        return (_clean_text(value, 200) or None) if value is not None else None

    @field_validator("storage_location")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        value = (_clean_text(value, 500) or None) if value is not None else None
        # ``artifact:`` names a blob of the artifact store (``catalog.artifact_refs`` checks whose it is).
        if value is not None and value.startswith("artifact:") and not ARTIFACT_REFERENCE.fullmatch(value):
            raise ValueError(
                f"an artifact reference is 'artifact:sha256:' and 64 lower-case hex digits; got {value!r}"
            )
        return value

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        return _clean_text(value, 20_000, single_line=False) if value is not None else None

    @field_validator("documentation")
    @classmethod
    def _documentation(cls, value: str | None) -> str | None:
        return _clean_text(value, 200_000, single_line=False) if value is not None else None

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        return check_version(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        return None if value is None else _clean_list(value, MAX_TAGS, MAX_TAG_CHARS)

    @field_validator("subcategories", mode="before")
    @classmethod
    def _subcategories(cls, value: Any) -> Any:
        return None if value is None else _clean_list(value, MAX_SUBCATEGORIES, 100)

    @field_validator("shared_with", mode="before")
    @classmethod
    def _shared_with(cls, value: Any) -> Any:
        return None if value is None else _clean_list(value, MAX_SHARES, 100, names=True)

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value)

    @field_validator("input_format", "output_format")
    @classmethod
    def _format(cls, value: str | None) -> str | None:
        return check_format(value)

    @field_validator("input_schema", "output_schema", mode="before")
    @classmethod
    def _schema(cls, value: Any) -> Any:
        return check_json_schema(value)

    @field_validator("accuracy", "latency_ms", "latency_p95_ms", "timeout", mode="before")
    @classmethod
    def _finite_number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        if isinstance(value, float) and value != value:  # NaN slips past ge/le
            raise ValueError("must be a number, not NaN")
        return value

    @model_validator(mode="after")
    def _extra_is_small_json(self) -> ListingFields:
        extra = self.model_extra or {}
        if extra:
            try:
                size = len(json.dumps(extra))
            except (TypeError, ValueError):
                raise ValueError(f"unknown fields {sorted(extra)} must hold plain JSON values") from None
            if size > MAX_EXTRA_BYTES:
                raise ValueError(f"unknown fields {sorted(extra)} hold more than {MAX_EXTRA_BYTES} bytes")
        return self

    # ------------------------------------------------------------------ mapping to columns

    @property
    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})

    def given(self) -> set[str]:
        """Fields the caller actually set (an update changes only these)."""
        return (set(self.model_fields_set) & set(type(self).model_fields)) - {"owner"}

    def merged_subcategories(self, current: list[str] | None = None) -> list[str] | None:
        """``subcategory`` and ``subcategories`` merged into one list (None when neither was given).

        ``subcategory`` comes first (it is the primary one). In an update, giving either replaces the list.
        """
        if "subcategory" not in self.model_fields_set and "subcategories" not in self.model_fields_set:
            return None
        values: list[str] = []
        if self.subcategory:
            values.append(self.subcategory)
        for value in self.subcategories or []:
            if value.lower() not in {v.lower() for v in values}:
                values.append(value)
        return values

    def columns(self) -> dict[str, Any]:
        """The ``Listing`` column values for the fields that were given."""
        values: dict[str, Any] = {}
        for field in self.given() - NON_COLUMN_FIELDS:
            value = getattr(self, field)
            if isinstance(value, Resources):
                value = value.model_dump(exclude_none=True)
            elif isinstance(value, ListingKind | Visibility):
                value = value.value
            values[COLUMN_OF.get(field, field)] = value
        subcategories = self.merged_subcategories()
        if subcategories is not None:
            values["subcategories"] = subcategories
        if "tags" in values and values["tags"] is None:
            values["tags"] = []
        if "examples" in values and values["examples"] is None:
            values["examples"] = []
        if self.model_extra:
            values["extra"] = dict(self.model_extra)
        return values


class ListingInput(ListingFields):
    """A new listing: ``name``, ``kind`` and ``category`` are required."""

    name: str
    kind: ListingKind
    category: str


def bad_input_from(exc: ValidationError, prefix: str = "") -> BadInput:
    """One readable message naming every offending field: ``accuracy: must be ≤ 1 (got 1.5)``."""
    problems = []
    fields = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"]) or "listing"
        fields.append(loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] not in ("value_error", "extra_forbidden") and not isinstance(
            error.get("input"), dict | list
        ):
            message = f"{message} (got {error['input']!r})"
        problems.append(f"{loc}: {message}")
    # One offending field is also ``field``, the key every other BAD_INPUT uses (README: extensions.field).
    single = {"field": fields[0]} if len(set(fields)) == 1 else {}
    return BadInput(prefix + "; ".join(problems), fields=fields, **single)


def parse_listing(data: Any) -> ListingInput:
    """Validate a new listing; raises ``BadInput`` naming each bad field."""
    if not isinstance(data, dict):
        raise BadInput(f"a listing must be a JSON object, not {type(data).__name__}")
    try:
        return ListingInput.model_validate(data)
    except ValidationError as exc:
        raise bad_input_from(exc) from None


def parse_listing_patch(data: Any) -> ListingFields:
    """Validate a partial update; only the given fields change."""
    if not isinstance(data, dict):
        raise BadInput(f"a listing update must be a JSON object, not {type(data).__name__}")
    try:
        return ListingFields.model_validate(data)
    except ValidationError as exc:
        raise bad_input_from(exc) from None
