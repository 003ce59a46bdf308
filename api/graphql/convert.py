"""Turn strawberry input objects into the plain dicts the catalog services validate, and the services'
errors about those fields back into the names the client sent.

Only the fields the client actually sent are kept (``UNSET`` ones are dropped), so an update changes
exactly what was given and an explicit ``null`` still reaches the service as ``None``. Enums become their
string values and nested inputs become dicts, recursively.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from typing import Any

from strawberry import UNSET
from strawberry.utils.str_converters import to_camel_case

from infra.errors import MlrepoError


def to_plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return given_fields(value)
    return value


def given_fields(obj: Any, rename: dict[str, str] | None = None) -> dict[str, Any]:
    """The fields of a strawberry input that were sent, as ``{service_name: plain value}``."""
    rename = rename or {}
    return {
        rename.get(field.name, field.name): to_plain(getattr(obj, field.name))
        for field in dataclasses.fields(obj)
        if getattr(obj, field.name) is not UNSET
    }


def graphql_field_name(path: str, renamed: Mapping[str, str]) -> str:
    """``latency_ms`` → ``latencyP50Ms``: a service's field path as the client spelled it (``renamed``
    maps a service name back to the input field it came from, ``given_fields``'s ``rename`` reversed)."""
    head, *rest = path.split(".")
    return ".".join(to_camel_case(part) for part in (renamed.get(head, head), *rest))


@contextmanager
def errors_in_graphql_terms(renamed: Mapping[str, str] | None = None) -> Iterator[None]:
    """Re-raise a service error about input fields with the GraphQL names, in ``field``/``fields`` and
    wherever its message names them (only the names that differ are replaced, each as a whole token)."""
    try:
        yield
    except MlrepoError as error:
        names = [error.details.get("field"), *error.details.get("fields", ())]
        spelled = {n: graphql_field_name(n, renamed or {}) for n in names if isinstance(n, str)}
        spelled = {old: new for old, new in spelled.items() if old != new}
        if not spelled:
            raise
        message = error.message
        for old in sorted(spelled, key=len, reverse=True):
            message = re.sub(rf"(?<![\w.]){re.escape(old)}(?!\w)", spelled[old], message)
        details = dict(error.details)
        if "field" in details:
            details["field"] = spelled.get(details["field"], details["field"])
        if "fields" in details:
            details["fields"] = [spelled.get(n, n) for n in details["fields"]]
        raise type(error)(message, **details) from None
