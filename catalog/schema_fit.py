"""Does every payload one JSON Schema admits also satisfy another? (conservative subsumption)

Pipelines connect step A to step B only when whatever A may emit is something B accepts. Deciding that
for arbitrary JSON Schemas is undecidable in general, so this answers for the subset listings use —
``type``, ``enum``/``const``, ``properties``/``required``/``additionalProperties``, ``items``,
``minItems``/``maxItems``, numeric and string bounds, ``pattern``, ``format``, ``anyOf``/``oneOf`` and
local ``$ref`` — and says *no, with a reason* whenever it cannot prove *yes*. Objects are judged as they
travel: projected onto the producer's declared properties (``catalog.formats.project_to_schema``), so a
field the producer never declared never reaches the consumer. A false "no" costs the
requester a conditioning step; a false "yes" would break a run, so the check errs on the side of "no".
Pure functions only.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any] | bool

_NUMERIC = {"integer", "number"}
_ALL_TYPES = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})
# Assertions outside the subset compared here. On the producer's side ignoring one only widens what it may
# emit (still conservative); on the consumer's side it would say yes to payloads the consumer rejects.
# A ``$ref`` still there after resolution points outside the schema.
_UNCOMPARED = frozenset(
    {
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "propertyNames",
        "patternProperties",
        "prefixItems",
        "contains",
        "minContains",
        "maxContains",
        "unevaluatedProperties",
        "unevaluatedItems",
        "$ref",
        "$dynamicRef",
        "$recursiveRef",
    }
)


def fit_reasons(producer: Schema, consumer: Schema) -> list[str]:
    """Why payloads admitted by ``producer`` might be rejected by ``consumer``; empty when they never are."""
    try:
        return _fit(producer, consumer, "$", producer, consumer)
    except RecursionError:  # schemas that refer to themselves (trees) are compared only so deep
        return ["$: the schemas nest (or refer to themselves) too deeply to be compared"]


def _resolve(schema: Schema, root: Schema) -> Schema:
    """Follow local ``#/...`` references (only those: a schema must be self-contained)."""
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#") or seen > 32:
            return schema
        target: Any = root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                return schema
            target = target[part]
        schema = target
        seen += 1
    return schema


def _types(schema: dict[str, Any]) -> set[str] | None:
    declared = schema.get("type")
    if declared is None:
        if "const" in schema:
            return {_json_type(schema["const"])}
        if "enum" in schema and isinstance(schema["enum"], list):
            return {_json_type(v) for v in schema["enum"]}
        return None
    return {declared} if isinstance(declared, str) else set(declared)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_fits(p_types: set[str], c_types: set[str]) -> set[str]:
    """Producer types the consumer does not accept (an integer is a number, not the other way)."""
    missing = set()
    for t in p_types:
        if t in c_types or (t == "integer" and "number" in c_types):
            continue
        missing.add(t)
    return missing


def _values(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    return None


def _fit(p: Schema, c: Schema, path: str, p_root: Schema, c_root: Schema) -> list[str]:
    p = _resolve(p, p_root)
    c = _resolve(c, c_root)
    if c is True or c == {}:
        return []
    if p is False:
        return []
    if c is False:
        return [f"{path}: the consumer accepts nothing here"]
    if p is True:
        p = {}
    if not isinstance(p, dict) or not isinstance(c, dict):
        return [f"{path}: not a JSON Schema object"]
    if p == c and (p_root == c_root or not _has_ref(c)):
        return []  # the same constraints admit the same payloads
    uncompared = sorted(_UNCOMPARED & set(c))
    if uncompared:
        p_values = _values(p)
        if p_values is not None:  # a finite set of values: the validator answers exactly
            return _values_fit(p_values, c, path, c_root)
        return [
            f"{path}: the consumer uses {', '.join(uncompared)}, which cannot be checked against the producer"
        ]

    for key in ("anyOf", "oneOf"):
        if isinstance(p.get(key), list):
            base = {k: v for k, v in p.items() if k != key}
            reasons: list[str] = []
            for i, branch in enumerate(p[key]):
                merged = _travelling_branch(base, _resolve(branch, p_root))
                reasons += _fit(merged, c, f"{path}<{key}[{i}]>", p_root, c_root)
            return reasons
    for key in ("anyOf", "oneOf"):
        if isinstance(c.get(key), list):
            base = {k: v for k, v in c.items() if k != key}
            # The consumer's own keywords hold whichever branch matches; a branch merged over them may
            # replace one (its ``required``, its ``properties``), so they are checked on their own too.
            own = _fit(p, base, path, p_root, c_root)
            if own:
                return own
            branches = [_consumer_branch(base, branch, c_root) for branch in c[key]]
            attempts = []
            for i, merged in enumerate(branches):
                attempt = _fit(p, merged, path, p_root, c_root)
                if not attempt:
                    if key == "oneOf" and _may_match_another(p, branches, i):
                        return [f"{path}: may match more than one of the consumer's oneOf branches"]
                    return []
                attempts.append(attempt)
            return [f"{path}: fits none of the consumer's {key} branches ({attempts[0][0]})"]
    if "allOf" in c and isinstance(c["allOf"], list):
        reasons = []
        for branch in c["allOf"]:
            reasons += _fit(p, branch, path, p_root, c_root)
        rest = {k: v for k, v in c.items() if k != "allOf"}
        return reasons + _fit(p, rest, path, p_root, c_root)

    p_values = _values(p)
    if p_values is not None:
        # A finite set of values: check each one for real rather than reasoning about keywords.
        return _values_fit(p_values, c, path, c_root)

    reasons = []
    c_values = _values(c)
    if c_values is not None:
        return [f"{path}: the consumer accepts only {c_values!r}, the producer does not restrict its values"]

    p_types, c_types = _types(p), _types(c)
    if c_types is not None:
        if p_types is None:
            return [f"{path}: the producer may emit any type, the consumer needs {sorted(c_types)}"]
        missing = _type_fits(p_types, c_types)
        if missing:
            reasons.append(
                f"{path}: the producer may emit {sorted(missing)}, the consumer needs {sorted(c_types)}"
            )
    effective = p_types if p_types is not None else set(_ALL_TYPES)

    if "object" in effective:
        reasons += _object_fit(p, c, path, p_root, c_root)
    if "array" in effective:
        reasons += _array_fit(p, c, path, p_root, c_root)
    if effective & _NUMERIC:
        reasons += _bounds_fit(p, c, path, ("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum"))
        if "multipleOf" in c and p.get("multipleOf") != c["multipleOf"]:
            reasons.append(f"{path}: the consumer needs multiples of {c['multipleOf']}")
    if "string" in effective:
        reasons += _bounds_fit(p, c, path, ("minLength",), ("maxLength",))
        for key in ("pattern", "format", "contentEncoding", "contentMediaType"):
            if key in c and p.get(key) != c[key]:
                reasons.append(
                    f"{path}: the consumer needs {key} {c[key]!r}, the producer gives {p.get(key)!r}"
                )
    return reasons


def _travelling_branch(base: dict[str, Any], branch: Schema) -> dict[str, Any]:
    """One anyOf/oneOf branch of a producer as its payloads arrive: valid under the base and the branch,
    but projected by the base's own ``properties`` — ``project_to_schema`` never looks into branches."""
    if not isinstance(branch, dict):
        return dict(base)
    merged = {**base, **branch}
    if not any(key in branch for key in ("properties", "required", "additionalProperties")):
        return merged
    required = set(base.get("required") or []) | set(branch.get("required") or [])
    if "properties" in base:
        # Only the base's properties (and keys its additionalProperties schema keeps) arrive.
        merged["properties"] = base["properties"]
        if "additionalProperties" in base:
            merged["additionalProperties"] = base["additionalProperties"]
        else:
            merged.pop("additionalProperties", None)
        if not isinstance(base.get("additionalProperties"), dict):
            required &= set(base["properties"])
    else:
        # Nothing is dropped at this level, and nothing below it is projected: keys arrive as they were
        # emitted, so the branch's property schemas (which assume projection below) prove nothing.
        merged.pop("properties", None)
        merged["additionalProperties"] = {}
    merged["required"] = sorted(required)
    return merged


def _consumer_branch(base: dict[str, Any], branch: Any, c_root: Schema) -> Schema:
    """A consumer's anyOf/oneOf branch with the consumer's own keywords (``false`` accepts nothing)."""
    if isinstance(branch, dict):
        return {**base, **_resolve(branch, c_root)}
    return False if branch is False else base


def _may_match_another(p: dict[str, Any], branches: list[Schema], fitting: int) -> bool:
    """Whether a payload of ``p`` might also satisfy a oneOf branch besides ``fitting`` (oneOf then
    rejects it); only branches of types ``p`` never emits are proven not to match."""
    emitted = _types(p) or set(_ALL_TYPES)
    if emitted & _NUMERIC:
        emitted |= _NUMERIC  # an integer is a number, and a whole number is an integer
    for i, branch in enumerate(branches):
        if i == fitting:
            continue
        accepted = _types(branch) if isinstance(branch, dict) else None
        if branch is not False and (accepted is None or emitted & accepted):
            return True
    return False


def _has_ref(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "$ref" in schema or any(_has_ref(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_ref(v) for v in schema)
    return False


def _values_fit(values: list[Any], c: dict[str, Any], path: str, c_root: Schema) -> list[str]:
    from jsonschema import Draft202012Validator  # local: only finite-value producers need it
    from referencing.exceptions import Unresolvable

    # ``c`` validated as the part of the consumer's schema it is, so its references resolve in the whole.
    validator = Draft202012Validator(c_root).evolve(schema=c)
    try:
        bad = [v for v in values if not validator.is_valid(v)]
    except Unresolvable as exc:
        return [f"{path}: the consumer refers to a schema that cannot be resolved ({exc})"]
    return [f"{path}: the consumer rejects the value {v!r}" for v in bad]


def _object_fit(p: dict[str, Any], c: dict[str, Any], path: str, p_root: Schema, c_root: Schema) -> list[str]:
    reasons = []
    p_props: dict[str, Any] = p.get("properties", {}) or {}
    c_props: dict[str, Any] = c.get("properties", {}) or {}
    p_required = set(p.get("required", []) or [])
    for name in sorted(set(c.get("required", []) or []) - p_required):
        reasons.append(f"{path}.{name}: required by the consumer, not always produced")
    # What may arrive under an undeclared name once the payload is projected to the producer's schema.
    p_rest = _undeclared_survivor(p)
    for name, c_prop in c_props.items():
        if name in p_props:
            reasons += _fit(p_props[name], c_prop, f"{path}.{name}", p_root, c_root)
        elif name in p_required:
            reasons += _fit(True, c_prop, f"{path}.{name}", p_root, c_root)
        elif p_rest is not None:
            reasons += _fit(p_rest, c_prop, f"{path}.{name}", p_root, c_root)
    c_additional = c.get("additionalProperties", True)
    if c_additional is not True:
        for name, p_prop in p_props.items():
            if name not in c_props:
                reasons += _fit(p_prop, c_additional, f"{path}.{name}", p_root, c_root)
        if p_rest is not None:
            reasons += _fit(p_rest, c_additional, f"{path}.*", p_root, c_root)
    reasons += _bounds_fit(p, c, path, ("minProperties",), ("maxProperties",))
    return reasons


def _undeclared_survivor(p: dict[str, Any]) -> Schema | None:
    """Schema of keys outside ``properties`` that survive projection (``None``: they are all dropped).

    Mirrors ``catalog.formats.project_to_schema``: a schema that lists properties keeps only those (plus
    keys its ``additionalProperties`` schema describes); one that lists none passes every key on.
    """
    additional = p.get("additionalProperties", True)
    if isinstance(additional, dict):
        return additional
    if additional is False or "properties" in p:
        return None
    return True


def _array_fit(p: dict[str, Any], c: dict[str, Any], path: str, p_root: Schema, c_root: Schema) -> list[str]:
    reasons = []
    if "items" in c:
        reasons += _fit(p.get("items", True), c["items"], f"{path}[]", p_root, c_root)
    reasons += _bounds_fit(p, c, path, ("minItems",), ("maxItems",))
    if c.get("uniqueItems") and not p.get("uniqueItems"):
        reasons.append(f"{path}: the consumer needs unique items")
    return reasons


def _bounds_fit(
    p: dict[str, Any], c: dict[str, Any], path: str, lower_keys: tuple[str, ...], upper_keys: tuple[str, ...]
) -> list[str]:
    """The producer's range must lie inside the consumer's (a missing producer bound is unbounded)."""
    reasons = []
    for key in lower_keys:
        if key in c:
            bound = _tightest(p, lower_keys, lower=True)
            exclusive = key.startswith("exclusive")
            if bound is None or bound[0] < c[key] or (bound[0] == c[key] and exclusive and not bound[1]):
                reasons.append(
                    f"{path}: the consumer needs {key} {c[key]}, the producer allows {_show(bound)}"
                )
    for key in upper_keys:
        if key in c:
            bound = _tightest(p, upper_keys, lower=False)
            exclusive = key.startswith("exclusive")
            if bound is None or bound[0] > c[key] or (bound[0] == c[key] and exclusive and not bound[1]):
                reasons.append(
                    f"{path}: the consumer needs {key} {c[key]}, the producer allows {_show(bound)}"
                )
    return reasons


def _tightest(schema: dict[str, Any], keys: tuple[str, ...], lower: bool) -> tuple[float, bool] | None:
    found = [(schema[k], k.startswith("exclusive")) for k in keys if isinstance(schema.get(k), int | float)]
    if not found:
        return None
    return max(found) if lower else min(found, key=lambda b: (b[0], not b[1]))


def _show(bound: tuple[float, bool] | None) -> str:
    if bound is None:
        return "no bound"
    return f"{bound[0]}{' (exclusive)' if bound[1] else ''}"
