"""Usage events drive counts, latency percentiles and relative usage; reviews are one per account."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from catalog_helpers import listing_data, make_actor
from sqlalchemy import text, update

from catalog.actors import ANONYMOUS, Actor
from catalog.app import CatalogApp
from infra.errors import BadInput, Forbidden, NotFound, Unauthenticated
from infra.tables import UsageEvent, utcnow


async def test_concurrent_runs_are_all_counted(app: CatalogApp, alice: Actor) -> None:
    """On SQLite each record read the counters before it held the write lock: of 20 runs finishing
    together, one was counted."""
    view = await app.listings.create(alice, listing_data())
    await asyncio.gather(
        *(app.usage.record(view.id, "inference", success=True, latency_ms=5.0) for _ in range(20))
    )
    stats = await app.usage.stats(view.id)
    assert (stats.usage_count, stats.success_count) == (20, 20)
    before = await app.listings.get(ANONYMOUS, view.id)
    await app.usage.record(view.id, "view")  # a view changes nothing about the listing itself
    assert (await app.listings.get(ANONYMOUS, view.id)).updated_at == before.updated_at


async def test_runs_of_two_listings_of_one_category_finishing_together_are_both_counted(
    app: CatalogApp, alice: Actor
) -> None:
    """Recording a run locks its listing, then rewrites the relative usage of the others of its category:
    on PostgreSQL two runs of two listings, finishing together, each held one row and waited for the
    other's ("deadlock detected"), and the job whose finish lost stayed RUNNING. Here both are held at
    their usage event's insert (the table is locked meanwhile), so their transactions always overlap."""
    a = await app.listings.create(alice, listing_data("a"))
    b = await app.listings.create(alice, listing_data("b"))
    for view in (a, b):  # both relative 1.0: each new run now changes the other's share
        await app.usage.record(view.id, "inference", success=True, latency_ms=5.0)

    async with app.db.engine.connect() as blocker:
        if not app.db.is_sqlite:
            await blocker.exec_driver_sql("LOCK TABLE usage_events IN SHARE MODE")
        runs = [
            asyncio.create_task(app.usage.record(view.id, "inference", success=True, latency_ms=5.0))
            for view in (a, b)
        ]
        if not app.db.is_sqlite:
            await wait_for_lock_waiters(app, 2)
        await blocker.rollback()
    await asyncio.gather(*runs)

    stats = {listing.name: listing for listing in (await app.listings.list(ANONYMOUS)).items}
    assert (stats["a"].usage_count, stats["b"].usage_count) == (2, 2)
    assert stats["a"].relative_usage == stats["b"].relative_usage == 1.0


async def wait_for_lock_waiters(app: CatalogApp, count: int) -> None:
    """Until ``count`` sessions of the test's PostgreSQL database wait for a lock (each look on a
    connection of its own: a transaction sees one snapshot of ``pg_stat_activity``)."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with asyncio.timeout(10):
        while True:
            async with app.db.engine.connect() as connection:
                if await connection.scalar(waiting) >= count:
                    return
            await asyncio.sleep(0.02)


async def test_relative_usage_is_derived_per_category(app: CatalogApp, alice: Actor) -> None:
    a = await app.listings.create(alice, listing_data("a"))
    b = await app.listings.create(alice, listing_data("b"))
    other = await app.listings.create(alice, listing_data("c", category="Audio"))
    for _ in range(4):
        await app.usage.record(a.id, "inference", success=True, latency_ms=10)
    await app.usage.record(b.id, "inference", success=False, latency_ms=30)
    await app.usage.record(b.id, "view")  # a view is interest, not use
    await app.usage.record(other.id, "training", success=True)

    stats = {listing.name: listing for listing in (await app.listings.list(ANONYMOUS)).items}
    assert (stats["a"].usage_count, stats["a"].success_count, stats["a"].relative_usage) == (4, 4, 1.0)
    assert (stats["b"].usage_count, stats["b"].failure_count, stats["b"].relative_usage) == (1, 1, 0.25)
    assert stats["c"].relative_usage == 1.0  # the most used of its own category
    assert stats["a"].latency_p50_ms == 10 and stats["b"].latency_p95_ms == 30
    indexed = app.backend.get([a.id, b.id])
    assert (indexed[a.id].relative_usage, indexed[b.id].relative_usage) == (1.0, 0.25)

    # b overtakes a: a's share drops, and the index follows
    for _ in range(7):
        await app.usage.record(b.id, "pipeline_step", success=True)
    indexed = app.backend.get([a.id, b.id])
    assert (indexed[a.id].relative_usage, indexed[b.id].relative_usage) == (0.5, 1.0)


async def test_old_runs_leave_the_window(app: CatalogApp, alice: Actor) -> None:
    a = await app.listings.create(alice, listing_data("a"))
    b = await app.listings.create(alice, listing_data("b"))
    await app.usage.record(a.id, "inference")
    await app.usage.record(a.id, "inference")
    await app.usage.record(b.id, "inference")
    async with app.db.session() as session:  # a's runs happened long ago
        await session.execute(
            update(UsageEvent)
            .where(UsageEvent.listing_id == a.id)
            .values(created_at=utcnow() - timedelta(days=90))
        )
    assert await app.usage.refresh_category("Natural Language Processing") == 2
    assert (await app.usage.stats(a.id)).relative_usage == 0.0
    assert (await app.usage.stats(b.id)).relative_usage == 1.0
    assert (await app.usage.stats(a.id)).usage_count == 2  # lifetime counts stay


async def test_bad_usage_events_are_refused(app: CatalogApp, alice: Actor) -> None:
    a = await app.listings.create(alice, listing_data("a"))
    with pytest.raises(BadInput, match="kind"):
        await app.usage.record(a.id, "download")
    with pytest.raises(BadInput, match="latency"):
        await app.usage.record(a.id, "inference", latency_ms=-5)
    with pytest.raises(NotFound):
        await app.usage.record("missing", "inference")


async def test_reviews_one_per_account_and_visibility(app: CatalogApp, alice: Actor, bob: Actor) -> None:
    listing = await app.listings.create(alice, listing_data())
    first = await app.reviews.add(bob, listing.id, 4, "Good on short reviews.")
    second = await app.reviews.add(bob, listing.id, 2, "Struggles with sarcasm.")  # replaces the first
    assert second.id == first.id and (second.rating, second.author_name) == (2, "bob")
    carol = await make_actor(app, "carol", "requester")
    await app.reviews.add(carol, listing.id, 5)
    summary = await app.reviews.summary(ANONYMOUS, listing.id)
    assert (summary.average, summary.count) == (3.5, 2)
    assert [r.rating for r in await app.reviews.list(ANONYMOUS, listing.id)] == [5, 2]
    with pytest.raises(Forbidden):
        await app.reviews.add(alice, listing.id, 5, "my own is the best")
    with pytest.raises(Unauthenticated):
        await app.reviews.add(ANONYMOUS, listing.id, 5)
    for rating in (0, 6, 3.5, True):
        with pytest.raises(BadInput, match="rating"):
            await app.reviews.add(bob, listing.id, rating)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="text"):
        await app.reviews.add(bob, listing.id, 3, "x" * 5001)
    with pytest.raises(NotFound):
        await app.reviews.delete(carol, second.id)
    with pytest.raises(Unauthenticated):  # was NOT_FOUND, as if the review did not exist
        await app.reviews.delete(ANONYMOUS, second.id)
    await app.reviews.delete(bob, second.id)
    assert (await app.reviews.summary(ANONYMOUS, listing.id)).count == 1
