"""Turn strawberry input objects into the plain dicts the catalog services validate.

Only the fields the client actually sent are kept (``UNSET`` ones are dropped), so an update changes
exactly what was given and an explicit ``null`` still reaches the service as ``None``. Enums become their
string values and nested inputs become dicts, recursively.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from strawberry import UNSET


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
