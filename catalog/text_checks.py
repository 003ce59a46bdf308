"""Checks shared by every service that stores a caller's free text.

PostgreSQL cannot store NUL in a text column (asyncpg refuses the whole row) while SQLite stores it, so
the same write succeeded on one engine and failed inside the INSERT on the other. NUL is never meaningful
in a name, a label or a review: it is refused up front, the same way on both, naming the field.
"""

from __future__ import annotations

from infra.errors import BadInput

NUL = "\x00"


def refuse_nul(name: str, value: str | None) -> None:
    """BAD_INPUT naming ``name`` when ``value`` holds a NUL character."""
    if isinstance(value, str) and NUL in value:
        raise BadInput(f"{name} must not contain NUL characters", field=name)
