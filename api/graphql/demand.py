"""GraphQL for unmet demand: what requesters could not find, grouped into topics, for producers.

Resolvers only translate; ``catalog.demand.DemandService`` (``info.context.catalog.demand``) checks who
may see demand (producers and admins: requesters get FORBIDDEN, anonymous callers UNAUTHENTICATED),
groups it, and keeps subscriptions.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import strawberry

from catalog import demand_grouping, demand_report, demand_subscriptions
from catalog.demand import DemandService
from catalog.demand_alerts import DemandAlert as DemandAlertValue

DEFAULT_LIMIT = demand_report.DEFAULT_TOPICS


@asynccontextmanager
async def lifespan(services: Any) -> AsyncIterator[None]:
    """Stop the alert sweep at shutdown (the service itself is opened with the catalog)."""
    try:
        yield
    finally:
        await services.catalog.demand.close()


def demand_of(info: strawberry.Info) -> DemandService:
    return info.context.catalog.demand


@strawberry.type(description="How many of a topic's requests were made in one category.")
class DemandCategoryCount:
    category: str
    count: int


@strawberry.type(description="A pipeline connection nobody can convert: from this format to that one.")
class DemandFormatGap:
    input_format: str
    output_format: str
    count: int


@strawberry.type(description="Similar requests that found nothing useful: something a producer could build.")
class DemandTopic:
    label: str = strawberry.field(description="The topic's most central request, as typed.")
    keywords: list[str]
    count: int = strawberry.field(description="Unmet searches and pipeline gaps in the topic.")
    requesters: int = strawberry.field(description="Distinct signed-in accounts among them.")
    no_results: int
    no_selection: int = strawberry.field(description="Searches with results nobody selected in the window.")
    pipeline_gaps: int
    examples: list[str] = strawberry.field(description="Distinct requests, most asked first.")
    categories: list[DemandCategoryCount]
    format_gaps: list[DemandFormatGap]
    first_seen: datetime
    last_seen: datetime

    @classmethod
    def of(cls, topic: demand_grouping.DemandTopic) -> DemandTopic:
        return cls(
            label=topic.label,
            keywords=list(topic.keywords),
            count=topic.count,
            requesters=topic.requesters,
            no_results=topic.no_results,
            no_selection=topic.no_selection,
            pipeline_gaps=topic.pipeline_gaps,
            examples=list(topic.examples),
            categories=[DemandCategoryCount(category=c.category, count=c.count) for c in topic.categories],
            format_gaps=[
                DemandFormatGap(input_format=g.input_format, output_format=g.output_format, count=g.count)
                for g in topic.format_gaps
            ],
            first_seen=topic.first_seen,
            last_seen=topic.last_seen,
        )


@strawberry.type(description="A category whose unmet demand a producer follows.")
class DemandSubscription:
    category: str
    created_at: datetime
    last_seen_at: datetime | None
    warning: str | None = strawberry.field(
        default=None,
        description="Set by subscribeDemand when no public listing and no logged demand uses the category "
        "yet (such as 'NLP' in a catalog that says 'Natural Language Processing'): it names the catalog's "
        "categories. The subscription is made all the same: searches filtered by the category reach it.",
    )

    @classmethod
    def of(cls, subscription: demand_subscriptions.DemandSubscriptionInfo) -> DemandSubscription:
        return cls(
            category=subscription.category,
            created_at=subscription.created_at,
            last_seen_at=subscription.last_seen_at,
            warning=subscription.warning,
        )


@strawberry.type(description="Demand in the followed categories that appeared since it was last marked seen.")
class DemandInbox:
    subscriptions: list[DemandSubscription]
    topics: list[DemandTopic]


@strawberry.type(description="One search that just became unmet demand.")
class DemandAlert:
    id: strawberry.ID = strawberry.field(
        description="Identifies the alert. Not the search's id, which would let its holder mark the search "
        "satisfied."
    )
    text: str
    category: str | None
    reason: str = strawberry.field(description="no_results, no_selection or pipeline_gap.")
    created_at: datetime

    @classmethod
    def of(cls, alert: DemandAlertValue) -> DemandAlert:
        return cls(
            id=strawberry.ID(alert.public_id),
            text=alert.text,
            category=alert.category,
            reason=alert.reason,
            created_at=alert.created_at,
        )


@strawberry.type
class Query:
    @strawberry.field(description="Topics of unmet searches (made since `since`), largest first.")
    async def unmet_demand(
        self,
        info: strawberry.Info,
        category: str | None = None,
        since: datetime | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[DemandTopic]:
        topics = await demand_of(info).unmet_demand(info.context.actor, category, since, limit)
        return [DemandTopic.of(topic) for topic in topics]

    @strawberry.field(description="New unmet demand in the categories you follow.")
    async def demand_inbox(self, info: strawberry.Info, limit: int = DEFAULT_LIMIT) -> DemandInbox:
        inbox = await demand_of(info).inbox(info.context.actor, limit)
        return DemandInbox(
            subscriptions=[DemandSubscription.of(s) for s in inbox.subscriptions],
            topics=[DemandTopic.of(topic) for topic in inbox.topics],
        )

    @strawberry.field(description="The categories whose demand you follow.")
    async def demand_subscriptions(self, info: strawberry.Info) -> list[DemandSubscription]:
        return [DemandSubscription.of(s) for s in await demand_of(info).subscriptions(info.context.actor)]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Follow unmet demand in a category (idempotent).")
    async def subscribe_demand(self, info: strawberry.Info, category: str) -> DemandSubscription:
        return DemandSubscription.of(await demand_of(info).subscribe(info.context.actor, category))

    @strawberry.mutation(description="Stop following a category; false if you did not follow it.")
    async def unsubscribe_demand(self, info: strawberry.Info, category: str) -> bool:
        return await demand_of(info).unsubscribe(info.context.actor, category)

    @strawberry.mutation(description="Empty the demand inbox, for one category or all of them.")
    async def mark_demand_seen(
        self, info: strawberry.Info, category: str | None = None
    ) -> list[DemandSubscription]:
        return [
            DemandSubscription.of(s) for s in await demand_of(info).mark_seen(info.context.actor, category)
        ]


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Unmet searches as they happen, in `category` or else in the categories you follow "
        "(a later subscribeDemand or unsubscribeDemand changes a running stream)."
    )
    async def demand_alerts(
        self, info: strawberry.Info, category: str | None = None
    ) -> AsyncGenerator[DemandAlert, None]:
        async with info.context.subscription_slot():
            async for alert in demand_of(info).alerts(info.context.actor, category):
                yield DemandAlert.of(alert)
