"""Reading a value of a controlled vocabulary (``catalog.enums``) from user input, with one error style."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import TypeVar

from infra.errors import BadInput

E = TypeVar("E", bound=StrEnum)


def parse_choice(vocabulary: type[E], value: object, field: str) -> E:
    """``value`` as a member of ``vocabulary``, in any case; otherwise ``BadInput`` naming the field and
    the accepted values (GraphQL shows enums upper-case, the database stores them lower-case)."""
    try:
        return vocabulary(str(value).strip().lower())
    except ValueError:
        allowed = ", ".join(member.value for member in vocabulary)
        raise BadInput(f"{field} must be one of {allowed}; got {value!r}", field=field) from None


def parse_choices(vocabulary: type[E], values: Sequence[object] | None, field: str) -> tuple[str, ...] | None:
    """Several choices, deduplicated in order; ``None`` (no constraint) when none are given."""
    if not values:
        return None
    return tuple(dict.fromkeys(parse_choice(vocabulary, v, field).value for v in values))
