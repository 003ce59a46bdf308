"""Newest-first keyset paging over a table's ``(created_at, id)``, with opaque cursors.

Why keyset and not offsets: rows keep arriving at the head of these lists (listings, jobs), so an
offset page shifts under the reader and repeats or skips rows; a cursor that names the last row seen
resumes exactly after it however many rows arrived since.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_

from catalog.clock import as_utc
from infra.errors import BadInput


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([as_utc(created_at).isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return as_utc(datetime.fromisoformat(stamp)), str(row_id)
    except (ValueError, TypeError, OverflowError, binascii.Error, json.JSONDecodeError):
        raise BadInput(f"'after' is not a cursor this service issued: {cursor!r}", field="after") from None


def check_page_size(first: int, max_page_size: int) -> None:
    if first < 1 or first > max_page_size:
        raise BadInput(f"first must be between 1 and {max_page_size}; got {first}", field="first")


def newest_first(query: Select, table: Any, after: str | None, first: int) -> Select:
    """``query`` from the row after ``after`` (a cursor of this module), newest first, one row more than
    ``first`` so the caller can tell whether a next page exists."""
    if after:
        stamp, last_id = decode_cursor(after)
        query = query.where(
            or_(table.created_at < stamp, and_(table.created_at == stamp, table.id < last_id))
        )
    return query.order_by(table.created_at.desc(), table.id.desc()).limit(first + 1)
