"""Reading unmet demand for producers: the report, the inbox, and marking the inbox seen.

The report is every unmet search (and pipeline gap) matching a category and a start, grouped into topics;
the inbox is the same for the producer's subscribed categories, limited to what became unmet since they
last marked it seen. Both select the log's rows through the clauses of ``catalog.demand_unmet`` and hand
them to the grouping (``catalog.demand_grouping``). Separate because it is the read side of the log,
with its own limits, and the one place that decides which rows a producer is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, false, or_, select, update

from catalog.actors import Actor
from catalog.clock import as_utc, utc_input
from catalog.demand_grouping import DemandTopic
from catalog.demand_subscriptions import DemandSubscriptionInfo
from catalog.demand_unmet import (
    UnmetEvent,
    became_unmet_after,
    category_is,
    clean_category,
    require_producer,
    same_category,
    unmet_clause,
    unmet_reason,
)
from infra.db import Database
from infra.errors import BadInput, NotFound
from infra.settings import Settings
from infra.tables import DemandSubscription, SearchEvent

DEFAULT_TOPICS = 20
# Rows read per grouping, as a multiple of the distinct-query cap: repeats of a query are common.
ROWS_PER_DISTINCT_QUERY = 5


@dataclass(frozen=True, slots=True)
class DemandInbox:
    subscriptions: tuple[DemandSubscriptionInfo, ...]
    topics: tuple[DemandTopic, ...]


class DemandReport:
    """The reading part of ``DemandService`` (``catalog.demand``), which provides these attributes,
    ``window`` and ``flush``; it groups through ``_topics`` (``catalog.demand_grouping``) and lists
    subscriptions through ``subscriptions`` (``catalog.demand_subscriptions``)."""

    db: Database
    settings: Settings
    clock: Callable[[], datetime]

    async def unmet_demand(
        self,
        actor: Actor,
        category: str | None = None,
        since: datetime | None = None,
        limit: int = DEFAULT_TOPICS,
    ) -> list[DemandTopic]:
        """Topics of unmet searches (made at or after ``since``), largest first."""
        require_producer(actor)
        self._check_limit(limit)
        await self.flush()
        conditions = [unmet_clause(self.clock(), self.window)]
        if category is not None:
            conditions.append(category_is(clean_category(category)))
        if since is not None:
            conditions.append(SearchEvent.created_at >= utc_input(since, "since"))
        return await self._topics(await self._unmet_events(conditions), limit)

    async def inbox(self, actor: Actor, limit: int = DEFAULT_TOPICS) -> DemandInbox:
        """Demand in the actor's subscribed categories that appeared since they last marked it seen."""
        require_producer(actor)
        self._check_limit(limit)
        await self.flush()
        subscriptions = await self.subscriptions(actor)
        if not subscriptions:
            return DemandInbox(subscriptions=(), topics=())
        per_category = [
            and_(
                category_is(sub.category),
                became_unmet_after(sub.last_seen_at or sub.created_at, self.window),
            )
            for sub in subscriptions
        ]
        conditions = [unmet_clause(self.clock(), self.window), or_(false(), *per_category)]
        topics = await self._topics(await self._unmet_events(conditions), limit)
        return DemandInbox(subscriptions=tuple(subscriptions), topics=tuple(topics))

    async def mark_seen(self, actor: Actor, category: str | None = None) -> list[DemandSubscriptionInfo]:
        """Empty the inbox (for one category, or all): later demand shows up there again."""
        require_producer(actor)
        statement = update(DemandSubscription).where(DemandSubscription.account_id == actor.account_id)
        if category is not None:
            statement = statement.where(same_category(DemandSubscription.category, clean_category(category)))
        async with self.db.session() as session:
            result = await session.execute(statement.values(last_seen_at=self.clock()))
            if category is not None and result.rowcount == 0:
                raise NotFound(f"you are not subscribed to {category!r}")
        return await self.subscriptions(actor)

    def _check_limit(self, limit: int) -> None:
        if not 1 <= limit <= self.settings.max_page_size:
            raise BadInput(f"limit must be between 1 and {self.settings.max_page_size}", field="limit")

    async def _unmet_events(self, conditions: list[ColumnElement[bool]]) -> list[UnmetEvent]:
        row_cap = self.settings.demand_max_queries * ROWS_PER_DISTINCT_QUERY
        statement = (
            select(
                SearchEvent.id,
                SearchEvent.text,
                SearchEvent.category,
                SearchEvent.account_id,
                SearchEvent.result_count,
                SearchEvent.facets,
                SearchEvent.embedding,
                SearchEvent.created_at,
            )
            .where(*conditions)
            .order_by(SearchEvent.created_at.desc(), SearchEvent.id)
            .limit(row_cap)
        )
        async with self.db.session() as session:
            rows = (await session.execute(statement)).all()
        return [
            UnmetEvent(
                id=row.id,
                text=row.text,
                category=row.category,
                account_id=row.account_id,
                reason=unmet_reason(row.result_count, row.facets),
                facets=row.facets or {},
                embedding=row.embedding,
                created_at=as_utc(row.created_at),
            )
            for row in rows
        ]
