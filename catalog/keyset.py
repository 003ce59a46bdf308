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
from infra.cursor_signing import CursorSigner, not_issued
from infra.errors import BadInput


def encode_cursor(
    signer: CursorSigner,
    kind: str,
    created_at: datetime,
    row_id: str,
    scope: str = "",
    filtered_by: str | None = None,
) -> str:
    """``scope``: whose list it pages (an account's own jobs), so another's cursor is refused.
    ``filtered_by``: a digest of the filter the page was read under, carried in the signed position so
    that ``decode_cursor`` can tell a cursor of the same list under another filter, and say so."""
    position = [as_utc(created_at).isoformat(), row_id]
    return signer.seal(kind, position if filtered_by is None else [*position, filtered_by], scope)


def decode_cursor(
    signer: CursorSigner, kind: str, cursor: str, scope: str = "", filtered_by: str | None = None
) -> tuple[datetime, str]:
    """The position of ``cursor``; BadInput unless this service issued it for ``kind``, ``scope`` and
    (when given) the filter whose digest is ``filtered_by``. Under another filter the position would
    still be a valid row, but the next page of a different list than the one the client was reading."""
    position = signer.open(kind, cursor, scope)
    if filtered_by is not None:
        if len(position) != 3:
            raise BadInput(not_issued(cursor), field="after")
        if position.pop() != filtered_by:
            raise BadInput(
                "'after' is a cursor of this list under another filter: pass the filter it was issued "
                "with, or start again without it",
                field="after",
            )
    try:
        stamp, row_id = position
        return as_utc(datetime.fromisoformat(stamp)), str(row_id)
    except (ValueError, TypeError, OverflowError):
        raise BadInput(not_issued(cursor), field="after") from None


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
