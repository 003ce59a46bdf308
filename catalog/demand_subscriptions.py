"""Producers' subscriptions to categories of unmet demand: follow, unfollow, list.

A subscription is what the inbox reads (``catalog.demand_report``) and what an alert stream follows by
default (``catalog.demand_streams``); a change reaches the running streams of its producer at once, here
and on other API processes (``_refollow``). Separate because it is plain bookkeeping of rows, with its
own race (two subscribes at once), that both of those build on.

A subscription to a category nothing uses is accepted with a ``warning`` (``_unused_category_warning``),
not refused: demand is filed under the category a search filters by (any name a requester types) or
the one inferred from public listings' labels, so a category no listing has yet ("Quantum ML") still
collects the searches filtered by it, and a producer may follow it before publishing there. But a
subscription to "NLP" in a catalog that says "Natural Language Processing" collected almost nothing,
silently: the warning says so and names the categories listings use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError

from catalog.actors import Actor
from catalog.clock import as_utc
from catalog.demand_alerts import DemandAlertHub
from catalog.demand_relay import DemandRelay
from catalog.demand_unmet import clean_category, require_producer, same_category
from catalog.enums import Visibility
from infra.db import Database
from infra.tables import DemandSubscription, Listing, SearchEvent

# How many of the catalog's categories a warning names (a catalog may have many; a few show the way).
MAX_NAMED_CATEGORIES = 30


@dataclass(frozen=True, slots=True)
class DemandSubscriptionInfo:
    category: str
    created_at: datetime
    last_seen_at: datetime | None
    # Set by ``subscribe`` when no public listing and no logged demand uses the category yet.
    warning: str | None = None


class DemandSubscriptions:
    """The subscriptions part of ``DemandService`` (``catalog.demand``), which provides these attributes."""

    db: Database
    alert_hub: DemandAlertHub
    relay: DemandRelay | None
    clock: Callable[[], datetime]

    async def subscribe(self, actor: Actor, category: str) -> DemandSubscriptionInfo:
        """Follow demand in ``category`` (idempotent; categories match regardless of case). The answer
        carries a ``warning`` when nothing uses the category yet (module docstring)."""
        require_producer(actor)
        category = clean_category(category)
        existing = await self._subscription(actor, category)
        if existing is not None:
            return replace(existing, warning=await self._unused_category_warning(existing.category))
        warning = await self._unused_category_warning(category)
        try:
            async with self.db.session() as session:
                row = DemandSubscription(
                    account_id=actor.account_id, category=category, created_at=self.clock()
                )
                session.add(row)
        except IntegrityError:  # a concurrent subscribe won the race
            found = await self._subscription(actor, category)
            if found is None:
                raise
            return replace(found, warning=warning)
        await self._refollow(actor)
        return replace(_subscription_info(row), warning=warning)

    async def unsubscribe(self, actor: Actor, category: str) -> bool:
        """Stop following ``category``; False when the actor was not subscribed to it."""
        require_producer(actor)
        cleaned = clean_category(category)
        async with self.db.session() as session:
            result = await session.execute(
                delete(DemandSubscription).where(
                    DemandSubscription.account_id == actor.account_id,
                    same_category(DemandSubscription.category, cleaned),
                )
            )
        if result.rowcount > 0:
            await self._refollow(actor)
            return True
        return False

    async def subscriptions(self, actor: Actor) -> list[DemandSubscriptionInfo]:
        require_producer(actor)
        async with self.db.session() as session:
            rows = await session.scalars(
                select(DemandSubscription)
                .where(DemandSubscription.account_id == actor.account_id)
                .order_by(DemandSubscription.category)
            )
            return [_subscription_info(row) for row in rows]

    async def _refollow(self, actor: Actor) -> None:
        """Running ``alerts`` streams that follow the actor's subscriptions follow the change (those on
        other API processes too, over Redis when configured)."""
        categories = [sub.category for sub in await self.subscriptions(actor)]
        self.alert_hub.refollow(actor.account_id, categories)
        if self.relay is not None:
            await self.relay.publish_refollow(actor.account_id)

    async def _unused_category_warning(self, category: str) -> str | None:
        """None when a public, active listing or any logged demand uses ``category`` (in any case);
        otherwise what the producer should know, naming the categories public listings use. Only public
        listings count: a warning must not reveal a private listing's category."""
        public = (Listing.visibility == Visibility.PUBLIC.value) & (Listing.status == "active")
        async with self.db.session() as session:
            used = await session.scalar(
                select(
                    exists().where(public, same_category(Listing.category, category))
                    | exists().where(same_category(SearchEvent.category, category))
                )
            )
            if used:
                return None
            known = list(
                await session.scalars(
                    select(Listing.category).where(public).distinct().order_by(Listing.category)
                )
            )
        named = ", ".join(known[:MAX_NAMED_CATEGORIES]) + (
            " ..." if len(known) > MAX_NAMED_CATEGORIES else ""
        )
        return (
            f"no public listing and no logged demand uses the category {category!r}: a search's demand is "
            f"filed under the category it filters by or the one inferred from listings, so this "
            f"subscription gets only searches filtered by {category!r}. "
            + (f"The catalog's categories: {named}." if known else "The catalog has no public listings yet.")
        )

    async def _subscription(self, actor: Actor, category: str) -> DemandSubscriptionInfo | None:
        async with self.db.session() as session:
            row = await session.scalar(
                select(DemandSubscription).where(
                    DemandSubscription.account_id == actor.account_id,
                    same_category(DemandSubscription.category, category),
                )
            )
            return _subscription_info(row) if row else None


def _subscription_info(row: DemandSubscription) -> DemandSubscriptionInfo:
    return DemandSubscriptionInfo(
        category=row.category,
        created_at=as_utc(row.created_at),
        last_seen_at=as_utc(row.last_seen_at) if row.last_seen_at else None,
    )
