"""What counts as unmet demand, and the rules every part of the demand service shares.

A search is *unmet* when it had no results, or when nothing was selected from it within
``Settings.demand_window_s``; a pipeline gap is unmet from the moment it is hit. This is decided by the
clauses here when demand is read, not stored (see ``catalog.demand``). Logging, the report, the inbox and
the alert sweeps all read the log through these clauses, and all name and match categories the same way,
so they live apart from any one of them; who may read demand (``require_producer``) is shared likewise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select

from catalog.actors import Actor
from catalog.text_checks import refuse_nul
from infra.errors import BadInput, Forbidden, Unauthenticated
from infra.tables import SearchEvent, UsageEvent

NO_RESULTS = "no_results"
NO_SELECTION = "no_selection"
PIPELINE_GAP = "pipeline_gap"
# Marks a pipeline gap in ``search_events.facets`` (the table is shared with searches).
SOURCE_FACET = "source"
MAX_CATEGORY_CHARS = 100


@dataclass(frozen=True, slots=True)
class UnmetEvent:
    id: str
    text: str
    category: str | None
    account_id: str | None
    reason: str
    facets: dict[str, Any]
    embedding: bytes | None
    created_at: datetime


def require_producer(actor: Actor) -> None:
    """Unmet demand is market information for the people who can act on it: producers and admins."""
    if actor.is_anonymous:
        raise Unauthenticated("sign in as a producer to see unmet demand")
    if not actor.is_producer:
        raise Forbidden("only producers and admins can see unmet demand")


def clean_category(category: str) -> str:
    refuse_nul("category", category)
    cleaned = " ".join(str(category).split())
    if not cleaned:
        raise BadInput("category must not be empty", field="category")
    if len(cleaned) > MAX_CATEGORY_CHARS:
        raise BadInput(f"category is longer than {MAX_CATEGORY_CHARS} characters", field="category")
    return cleaned


def unmet_reason(result_count: int, facets: dict[str, Any] | None) -> str:
    if (facets or {}).get(SOURCE_FACET) == PIPELINE_GAP:
        return PIPELINE_GAP
    return NO_RESULTS if result_count == 0 else NO_SELECTION


def same_category(column: Any, category: str) -> ColumnElement[bool]:
    """Categories match regardless of case, with the database's lower() on both sides: SQLite folds only
    ASCII, so a name lowered in Python never equalled a column holding an accented capital."""
    return func.lower(column) == func.lower(category.strip())


def category_is(category: str) -> ColumnElement[bool]:
    return same_category(SearchEvent.category, category)


def not_selected() -> ColumnElement[bool]:
    used = exists(select(UsageEvent.id).where(UsageEvent.search_id == SearchEvent.id))
    return and_(SearchEvent.selected_listing_id.is_(None), ~used)


def unmet_clause(now: datetime, window: timedelta) -> ColumnElement[bool]:
    """Searches that are unmet demand at ``now``: no results, or a closed window with no selection."""
    return or_(
        SearchEvent.result_count == 0,
        and_(SearchEvent.created_at <= now - window, not_selected()),
    )


def became_unmet_after(since: datetime, window: timedelta) -> ColumnElement[bool]:
    """Searches that turned into unmet demand after ``since`` (combine with ``unmet_clause``).

    A no-result search is unmet from the moment it is made; one with results only when its selection
    window closes, so a search made just before ``since`` may still become unmet after it.
    """
    return or_(
        and_(SearchEvent.result_count == 0, SearchEvent.created_at > since),
        and_(SearchEvent.result_count > 0, SearchEvent.created_at > since - window),
    )
