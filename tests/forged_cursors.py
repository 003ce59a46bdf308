"""What a client can do to an opaque cursor: read the position in it and hand back one of its own making
(the unsigned form of earlier versions, or a changed position under the signature it was given)."""

from __future__ import annotations

import base64
import json
from typing import Any

SIGNED_PREFIX = "c1."


def _b64(position: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def _unb64(text: str) -> Any:
    return json.loads(base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode()))


def position_in(cursor: str) -> list[Any]:
    if cursor.startswith(SIGNED_PREFIX):
        return _unb64(cursor.removeprefix(SIGNED_PREFIX).rsplit(".", 1)[0])
    return _unb64(cursor)


def old_style(position: list[Any]) -> str:
    """A cursor as the service issued them before they were signed: base64url of the JSON position."""
    return _b64(position)


def with_position(cursor: str, position: list[Any]) -> str:
    """``cursor`` with its position replaced and its signature kept."""
    signature = cursor.rsplit(".", 1)[-1]
    return f"{SIGNED_PREFIX}{_b64(position)}.{signature}"
