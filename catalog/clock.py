"""Time helpers shared by the catalog services."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC. SQLite hands back naive datetimes for timezone-aware columns (they were written
    in UTC), and it compares a bound datetime by its wall-clock digits, ignoring the offset: a caller's
    ``since`` at +05:00 must become UTC before it reaches a query."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
