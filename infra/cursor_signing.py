"""Signed opaque cursors: a page position the service handed out, refused if a client changed it.

Why sign them: a cursor carries the position a page resumes from (a row's ``(created_at, id)``, a
record's index and byte offset in a job's outputs). Unsigned, a client could hand back a position of its
own making: a forged ``Job.outputs`` cursor pairing one record's offset with another index made the
service number the records wrongly. A cursor is now the position's JSON, base64url, and an HMAC-SHA256
(first 128 bits) over it, the kind of list it pages and the scope it was issued for (a job's id), so a
changed position, or a cursor of another list or job, is refused with BadInput like any forged one.

The key is per deployment and shared by every process, without a new setting: derived from
``MLREPO_ARTIFACT_MASTER_KEY`` when one is configured, else a random key kept in the artifact key
directory (``cursor-signing.key``, 0600, created once: the first process to link its file wins and the
others read it). Search cursors keep their own per-snapshot secret (``catalog.search_snapshots``) and sign
with ``mac`` below. Cursors issued before signing (plain base64) are refused with a message that says so.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from infra.artifacts import key_dir_of
from infra.errors import BadInput

PREFIX = "c1."
MAC_CHARS = 32  # hex: 128 bits
KEY_FILE = "cursor-signing.key"
KEY_TEMP_PREFIX = ".k-"  # swept by the artifact GC if a crash leaves it behind
MASTER_KEY_LABEL = b"mlrepo cursor signing v1"
UNSIGNED = (
    "'after' is not a cursor this service issued: it is unsigned, as cursors of earlier versions were, "
    "and those are no longer accepted; start again without it"
)


def mac(key: bytes, message: bytes) -> str:
    """The hex HMAC-SHA256 of ``message`` (first ``MAC_CHARS``), as every cursor of this service carries."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:MAC_CHARS]


def mac_matches(key: bytes, message: bytes, given: str) -> bool:
    """In constant time; compared as bytes, since ``compare_digest`` raises on non-ASCII text (a client's)."""
    return hmac.compare_digest(mac(key, message).encode(), given.encode("utf-8", "replace"))


class CursorSigner:
    """Seals a position into an opaque cursor and opens only cursors it sealed, for the same list and
    scope."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a cursor signing key needs at least 128 bits")
        self._key = key

    @classmethod
    def from_settings(cls, settings) -> CursorSigner:  # type: ignore[no-untyped-def]
        return cls(deployment_key(settings))

    def seal(self, kind: str, position: list[Any], scope: str = "") -> str:
        body = json.dumps(position, separators=(",", ":")).encode()
        encoded = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{PREFIX}{encoded}.{mac(self._key, _message(kind, scope, body))}"

    def open(self, kind: str, cursor: str, scope: str = "") -> list[Any]:
        """The position ``seal`` put in ``cursor``; BadInput when this service did not issue it for
        ``kind`` and ``scope`` (or it was changed since)."""
        if not cursor.startswith(PREFIX):
            raise BadInput(UNSIGNED if _is_unsigned_json(cursor) else not_issued(cursor), field="after")
        encoded, _, given = cursor[len(PREFIX) :].rpartition(".")
        try:
            body = _unpadded_b64decode(encoded)
        except (ValueError, binascii.Error):
            raise BadInput(not_issued(cursor), field="after") from None
        if not mac_matches(self._key, _message(kind, scope, body), given):
            raise BadInput(not_issued(cursor), field="after")
        position = json.loads(body)
        if not isinstance(position, list):
            raise BadInput(not_issued(cursor), field="after")
        return position


def _message(kind: str, scope: str, body: bytes) -> bytes:
    return f"{kind}\0{scope}\0".encode() + body


def not_issued(cursor: str) -> str:
    """What a cursor this service did not issue is told (the start of it only: it may be long)."""
    return f"'after' is not a cursor this service issued: {cursor[:80]!r}"


def _unpadded_b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode())


def _is_unsigned_json(cursor: str) -> bool:
    """Whether ``cursor`` looks like one issued before signing (base64url of a JSON list)."""
    try:
        return isinstance(
            json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode())), list
        )
    except (ValueError, TypeError, binascii.Error):
        return False


def deployment_key(settings) -> bytes:  # type: ignore[no-untyped-def]
    """The deployment's cursor key: from the artifact master key when set, else the key directory's."""
    master_hex = getattr(settings, "artifact_master_key", None)
    if master_hex:
        return hmac.new(bytes.fromhex(master_hex), MASTER_KEY_LABEL, hashlib.sha256).digest()
    return key_file(key_dir_of(settings))


def key_file(key_dir: Path) -> bytes:
    """The random key in ``key_dir/cursor-signing.key``, created by whichever process comes first."""
    path = key_dir / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return bytes.fromhex(path.read_text().strip())
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=key_dir, prefix=KEY_TEMP_PREFIX)
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp made it 0600
            f.write(secrets.token_hex(32))
        with contextlib.suppress(FileExistsError):  # another process linked its own first: use that
            os.link(temp, path)
    finally:
        os.unlink(temp)
    return bytes.fromhex(path.read_text().strip())
