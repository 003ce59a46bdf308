"""Usage events and the quality signals derived from them.

Every view, run and pipeline step is an event row (the truth). From the events the listing keeps:
``usage_count`` / ``success_count`` / ``failure_count`` (runs only: inference, training, pipeline steps —
a view is interest, not use), latency p50/p95 over its recent runs, and ``relative_usage`` — its runs in
the last ``Settings.usage_window_days`` divided by the most runs any listing of the same category had in
that window (1.0 = the category's most used; 0 = unused). Relative usage is recomputed whenever a run is
recorded, for the listings whose value changes, and the index is updated in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from sqlalchemy import false, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.choices import parse_choice
from catalog.enums import UsageKind
from catalog.indexing import IndexChanges, ListingIndex
from infra.db import Database
from infra.errors import BadInput, NotFound
from infra.tables import Listing, UsageEvent, utcnow

RUN_KINDS = frozenset({UsageKind.INFERENCE.value, UsageKind.TRAINING.value, UsageKind.PIPELINE_STEP.value})
LATENCY_SAMPLE = 500  # latency percentiles over the listing's most recent runs
RELATIVE_EPSILON = 1e-9
SEARCH_ID_CHARS = UsageEvent.__table__.c.search_id.type.length
CATEGORY_LOCK_SPACE = 0x75736167  # first key of a category's advisory lock ("usag"); the second: its hash


@dataclass(frozen=True, slots=True)
class UsageStats:
    listing_id: str
    usage_count: int
    success_count: int
    failure_count: int
    relative_usage: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None


def parse_usage_kind(kind: str) -> str:
    return parse_choice(UsageKind, kind, "kind").value


class UsageService:
    def __init__(self, db: Database, index: ListingIndex, window_days: int = 30) -> None:
        self.db = db
        self.index = index
        self.window = timedelta(days=window_days)

    async def record(
        self,
        listing_id: str,
        kind: str,
        *,
        account_id: str | None = None,
        success: bool | None = None,
        latency_ms: float | None = None,
        search_id: str | None = None,
    ) -> UsageStats:
        """Record one event and refresh the signals it changes (trusted: the caller already checked access).

        A view only records the event (it marks a search as satisfied for unmet demand).
        """
        kind = parse_usage_kind(kind)
        if search_id is not None and len(search_id) > SEARCH_ID_CHARS:
            # Longer than any search id: not one this service issued (and PostgreSQL would refuse it).
            raise BadInput(f"searchId is not a search id: {search_id[:40]!r}", field="searchId")
        if latency_ms is not None and (latency_ms < 0 or latency_ms != latency_ms):
            raise BadInput(
                f"latency_ms must be a non-negative number; got {latency_ms!r}", field="latency_ms"
            )
        event = UsageEvent(
            listing_id=listing_id,
            account_id=account_id,
            kind=kind,
            success=success,
            latency_ms=latency_ms,
            search_id=search_id,
        )
        async with self.index.atomic() as (session, changes):
            row = await self.record_in(session, changes, event)
            if row is None:
                raise NotFound(f"no listing with id {listing_id!r}")
        return self._stats(row)

    async def record_in(
        self, session: AsyncSession, changes: IndexChanges, event: UsageEvent
    ) -> Listing | None:
        """``record`` of a new ``event`` with values already checked, inside the caller's
        ``ListingIndex.atomic`` transaction: a job counts its run in the transaction that makes it final,
        so a cancel that won instead counts nothing. None (and nothing written) when the listing is gone."""
        listing_id, kind, success, latency_ms = event.listing_id, event.kind, event.success, event.latency_ms
        if self.db.is_sqlite:
            # SQLite has no row locks and takes its write lock at a transaction's first write: the
            # counters read before it would be stale when runs finish together. Write first (a
            # no-op: updated_at is named so that its onupdate does not stamp a mere view).
            touch = (
                update(Listing)
                .where(Listing.id == listing_id)
                .values(usage_count=Listing.usage_count, updated_at=Listing.updated_at)
            )
            await session.execute(touch)
        else:
            category = await session.scalar(select(Listing.category).where(Listing.id == listing_id))
            await self._lock_category(session, category)
        row = await session.get(Listing, listing_id, with_for_update=not self.db.is_sqlite)
        if row is None:
            return None
        session.add(event)
        if kind in RUN_KINDS:
            row.usage_count = (row.usage_count or 0) + 1
            if success is True:
                row.success_count = (row.success_count or 0) + 1
            elif success is False:
                row.failure_count = (row.failure_count or 0) + 1
            await session.flush()
            if latency_ms is not None:
                row.latency_p50_ms, row.latency_p95_ms = await self._latency(session, listing_id)
            row.updated_at = utcnow()
            changes.put(row)
            await self._refresh_relative_usage(session, row.category, changes)
        return row

    async def refresh_category(self, category: str) -> int:
        """Recompute relative usage of one category (e.g. after the window moved on); returns rows changed."""
        async with self.index.atomic() as (session, changes):
            await self._lock_category(session, category)
            await self._refresh_relative_usage(session, category, changes)
            return len(changes.rows)

    async def _lock_category(self, session: AsyncSession, category: str | None) -> None:
        """On PostgreSQL, one transaction at a time rewrites a category's relative usage. A run locks its
        own listing's row, and the refresh then writes the others of its category: two runs of two
        listings finishing together each held one row and waited for the other's (deadlock, and the
        loser's job stayed RUNNING). This transaction-scoped lock, taken before any row, orders them."""
        if not self.db.is_sqlite:
            await session.execute(
                select(func.pg_advisory_xact_lock(CATEGORY_LOCK_SPACE, func.hashtext(category or "")))
            )

    async def stats(self, listing_id: str) -> UsageStats:
        async with self.db.session() as session:
            row = await session.get(Listing, listing_id)
            if row is None:
                raise NotFound(f"no listing with id {listing_id!r}")
            return self._stats(row)

    async def _latency(self, session: AsyncSession, listing_id: str) -> tuple[float | None, float | None]:
        latencies = (
            await session.scalars(
                select(UsageEvent.latency_ms)
                .where(
                    UsageEvent.listing_id == listing_id,
                    UsageEvent.latency_ms.is_not(None),
                    UsageEvent.kind.in_(RUN_KINDS),
                )
                .order_by(UsageEvent.id.desc())
                .limit(LATENCY_SAMPLE)
            )
        ).all()
        if not latencies:
            return None, None
        p50, p95 = np.percentile(np.asarray(latencies, dtype=np.float64), [50, 95])
        return float(p50), float(p95)

    async def _refresh_relative_usage(
        self, session: AsyncSession, category: str, changes: IndexChanges
    ) -> None:
        """Runs in the window per listing of ``category`` → value / category max, written where it changed."""
        since = utcnow() - self.window
        counts = dict(
            (
                await session.execute(
                    select(UsageEvent.listing_id, func.count())
                    .join(Listing, Listing.id == UsageEvent.listing_id)
                    .where(
                        Listing.category == category,
                        UsageEvent.kind.in_(RUN_KINDS),
                        UsageEvent.created_at >= since,
                    )
                    .group_by(UsageEvent.listing_id)
                )
            ).all()
        )
        top = max(counts.values(), default=0)
        candidates = (
            await session.scalars(
                select(Listing).where(
                    Listing.category == category,
                    or_(Listing.relative_usage > 0, Listing.id.in_(list(counts)) if counts else false()),
                )
            )
        ).all()
        now = utcnow()
        for listing in candidates:
            value = counts.get(listing.id, 0) / top if top else 0.0
            if abs((listing.relative_usage or 0.0) - value) > RELATIVE_EPSILON:
                listing.relative_usage = value
                listing.updated_at = now
                changes.put(listing)

    @staticmethod
    def _stats(row: Listing) -> UsageStats:
        return UsageStats(
            listing_id=row.id,
            usage_count=row.usage_count or 0,
            success_count=row.success_count or 0,
            failure_count=row.failure_count or 0,
            relative_usage=row.relative_usage or 0.0,
            latency_p50_ms=row.latency_p50_ms,
            latency_p95_ms=row.latency_p95_ms,
        )
