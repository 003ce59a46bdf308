"""Newest-first keyset paging over a table's ``(created_at, id)``, with opaque, signed cursors.

Why keyset and not offsets: rows keep arriving at the head of these lists (listings, jobs), so an
offset page shifts under the reader and repeats or skips rows; a cursor that names the last row seen
resumes exactly after it however many rows arrived since. Cursors are signed (``infra.cursor_signing``)
for the list they page, so one the service did not issue, or one of another list, is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_

from catalog.clock import as_utc
from infra.cursor_signing import CursorSigner
from infra.errors import BadInput


def encode_cursor(signer: CursorSigner, kind: str, created_at: datetime, row_id: str, scope: str = "") -> str:
    """``scope``: whose list it pages (an account's own jobs), so another's cursor is refused."""
    return signer.seal(kind, [as_utc(created_at).isoformat(), row_id], scope)


def decode_cursor(signer: CursorSigner, kind: str, cursor: str, scope: str = "") -> tuple[datetime, str]:
    position = signer.open(kind, cursor, scope)
    try:
        stamp, row_id = position
        return as_utc(datetime.fromisoformat(stamp)), str(row_id)
    except (ValueError, TypeError, OverflowError):
        raise BadInput(
            f"'after' is not a cursor this service issued: {cursor[:80]!r}", field="after"
        ) from None


def check_page_size(first: int, max_page_size: int) -> None:
    if first < 1 or first > max_page_size:
        raise BadInput(f"first must be between 1 and {max_page_size}; got {first}", field="first")


def newest_first(query: Select, table: Any, after: tuple[datetime, str] | None, first: int) -> Select:
    """``query`` from the row after ``after`` (a position ``decode_cursor`` read), newest first, one row
    more than ``first`` so the caller can tell whether a next page exists."""
    if after:
        stamp, last_id = after
        query = query.where(
            or_(table.created_at < stamp, and_(table.created_at == stamp, table.id < last_id))
        )
    return query.order_by(table.created_at.desc(), table.id.desc()).limit(first + 1)
