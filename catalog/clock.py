"""Time helpers shared by the catalog services."""

from __future__ import annotations

from datetime import UTC, datetime

from infra.errors import BadInput


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC. SQLite hands back naive datetimes for timezone-aware columns (they were written
    in UTC), and it compares a bound datetime by its wall-clock digits, ignoring the offset: a caller's
    ``since`` at +05:00 must become UTC before it reaches a query."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def utc_input(moment: datetime, field: str) -> datetime:
    """A caller's datetime in UTC (``as_utc``); one whose UTC instant falls outside what datetime holds
    ("0001-01-01T00:00:00+14:00") is BAD_INPUT naming ``field``: its OverflowError was an internal error."""
    try:
        return as_utc(moment)
    except OverflowError:
        message = f"{field}: {moment.isoformat()} is outside the dates this service handles"
        raise BadInput(message, field=field) from None
