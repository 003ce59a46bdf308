"""Unmet demand: what requesters looked for and did not find, grouped into topics for producers.

The log is ``search_events``: the catalog search service calls ``DemandService.log_search`` once per
search, and the pipeline builder calls ``log_gap`` when no conditioning step joins two formats. A search
is *unmet* when it had no results, or when nothing was selected from it within
``Settings.demand_window_s``; a selection is ``search_events.selected_listing_id`` (set by
``record_selection``) or any ``usage_events`` row carrying the search's id (a view, run or pipeline
step that came from it). Whether a search is unmet is decided when demand is read, not stored, so a
late selection or a changed window never leaves a stale flag behind.

Producers (and admins) read the grouped demand (``unmet_demand``), subscribe to categories, and are
prompted through an inbox (topics that became unmet since they last looked) and live alerts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import ColumnElement, and_, delete, exists, false, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from catalog.actors import Actor
from catalog.clock import as_utc, utc_input
from catalog.demand_alerts import DemandAlert, DemandAlertHub
from catalog.demand_relay import DemandRelay
from catalog.demand_topics import central_member, cluster_by_similarity, keywords, normalize_query
from catalog.text_checks import refuse_nul
from infra.batching import BatchWriter
from infra.db import Database
from infra.errors import BadInput, Forbidden, NotFound, Unauthenticated, Unavailable
from infra.settings import Settings
from infra.tables import DemandSubscription, SearchEvent, UsageEvent, new_id, utcnow
from search.embeddings import normalize_rows

if TYPE_CHECKING:
    from search.embeddings import Encoder

logger = logging.getLogger("mlrepo.demand")

NO_RESULTS = "no_results"
NO_SELECTION = "no_selection"
PIPELINE_GAP = "pipeline_gap"
# Marks a pipeline gap in ``search_events.facets`` (the table is shared with searches).
SOURCE_FACET = "source"
EXAMPLES_PER_TOPIC = 5
KEYWORDS_PER_TOPIC = 3
DEFAULT_TOPICS = 20
MAX_CATEGORY_CHARS = 100
MAX_FORMAT_CHARS = 64
# Rows read per grouping, as a multiple of the distinct-query cap: repeats of a query are common.
ROWS_PER_DISTINCT_QUERY = 5
# How far back a sweep looks again for no-result searches logged by other API processes: a row is stamped
# when its search ran and committed up to a logging batch (plus a transaction) later, out of order.
OTHERS_OVERLAP = timedelta(seconds=30)
# Beyond its logging batch, how long another API process may take to commit a search it served.
OTHER_PROCESS_GRACE_S = 1.0
SEARCH_POLL_S = 0.05
SEARCH_ID_CHARS = SearchEvent.__table__.c.id.type.length


@dataclass(frozen=True, slots=True)
class CategoryCount:
    category: str
    count: int


@dataclass(frozen=True, slots=True)
class FormatGap:
    input_format: str
    output_format: str
    count: int


@dataclass(frozen=True, slots=True)
class DemandTopic:
    """Similar unmet requests: what a producer could build next, and how much it is wanted."""

    label: str  # the topic's most central request, verbatim
    keywords: tuple[str, ...]
    count: int  # unmet searches (and pipeline gaps) in the topic
    requesters: int  # distinct signed-in accounts among them (anonymous searches are not counted)
    no_results: int
    no_selection: int
    pipeline_gaps: int
    examples: tuple[str, ...]  # distinct requests, most asked first
    categories: tuple[CategoryCount, ...]
    format_gaps: tuple[FormatGap, ...]
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class DemandSubscriptionInfo:
    category: str
    created_at: datetime
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class DemandInbox:
    subscriptions: tuple[DemandSubscriptionInfo, ...]
    topics: tuple[DemandTopic, ...]


@dataclass(frozen=True, slots=True)
class _UnmetEvent:
    id: str
    text: str
    category: str | None
    account_id: str | None
    reason: str
    facets: dict[str, Any]
    embedding: bytes | None
    created_at: datetime


def may_select(searcher_id: str | None, actor: Actor) -> bool:
    """Whether ``actor`` may mark a search made by account ``searcher_id`` as selected (a view, a run or a
    pipeline step through its searchId): only the account that searched. A search made anonymously has
    no account to bind it to: whoever holds its id may (the id, 128 random bits, went only to whoever
    searched). Anyone else is told the search does not exist, as for an unknown id."""
    return searcher_id is None or searcher_id == actor.account_id


def unknown_search(search_id: str) -> NotFound:
    """The one refusal of a searchId the caller may not use, unknown or another account's."""
    return NotFound(f"no search with id {search_id!r}")


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


def _clean_format(value: str, field: str) -> str:
    cleaned = str(value).strip()
    if not cleaned or len(cleaned) > MAX_FORMAT_CHARS:
        raise BadInput(f"{field} must be 1-{MAX_FORMAT_CHARS} characters", field=field)
    return cleaned


def _format_name(data_format: str) -> str:
    """``image@1`` reads as "image" in a sentence (the version says nothing about the need)."""
    return data_format.split("@", 1)[0]


def vector_bytes(vector: np.ndarray | bytes | None) -> bytes | None:
    """How a query embedding is stored: raw float32 (the search service passes its query vector)."""
    if vector is None or isinstance(vector, bytes):
        return vector
    return np.asarray(vector, dtype=np.float32).reshape(-1).tobytes()


def _reason(result_count: int, facets: dict[str, Any] | None) -> str:
    if (facets or {}).get(SOURCE_FACET) == PIPELINE_GAP:
        return PIPELINE_GAP
    return NO_RESULTS if result_count == 0 else NO_SELECTION


def same_category(column: Any, category: str) -> ColumnElement[bool]:
    """Categories match regardless of case, with the database's lower() on both sides: SQLite folds only
    ASCII, so a name lowered in Python never equalled a column holding an accented capital."""
    return func.lower(column) == func.lower(category.strip())


def _category_is(category: str) -> ColumnElement[bool]:
    return same_category(SearchEvent.category, category)


def _not_selected() -> ColumnElement[bool]:
    used = exists(select(UsageEvent.id).where(UsageEvent.search_id == SearchEvent.id))
    return and_(SearchEvent.selected_listing_id.is_(None), ~used)


def unmet_clause(now: datetime, window: timedelta) -> ColumnElement[bool]:
    """Searches that are unmet demand at ``now``: no results, or a closed window with no selection."""
    return or_(
        SearchEvent.result_count == 0,
        and_(SearchEvent.created_at <= now - window, _not_selected()),
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


class DemandService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        encoder: Encoder | None = None,
        alert_hub: DemandAlertHub | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.encoder = encoder
        self.alert_hub = alert_hub or DemandAlertHub()
        self.clock = clock
        self._sweeper: asyncio.Task[None] | None = None
        self._swept_until: datetime | None = None
        # No-result searches and gaps already alerted here (logged here, or found by a sweep), by id with
        # their time, so a sweep re-reading its overlap announces another process's ones once.
        self._alerted: dict[str, datetime] = {}
        self._others_floor: datetime | None = None  # when the sweeper started: older ones are not news
        self._others_swept_until: datetime | None = None
        # Alerts and (un)subscribes reach other API processes at once over Redis; without it, by their sweep.
        self.relay = (
            DemandRelay(settings.redis_url, self, health_check_s=settings.demand_relay_health_check_s)
            if settings.redis_url
            else None
        )
        self._log = BatchWriter(
            self._insert,
            lambda: self.settings.demand_log_batch_s,
            "could not log %d searches for unmet demand",
        )

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.settings.demand_window_s)

    # ------------------------------------------------------------------ logging

    async def log_search(self, text: str, **event: Any) -> str | None:
        """Record one search (first page only: paging through results is not a new need).

        ``event`` holds the fields of ``_search_row``: ``result_count`` (required), ``account_id``,
        ``category`` (the one given or inferred), ``facets``, ``top_ids``, ``embedding`` (the query vector
        the search already computed, saving an encode when demand is grouped) and ``search_id`` (lets the
        search service hand the id to the requester before the write completes). Returns the search id
        to pass along with what the requester selects next, or None for a search without text (facet
        browsing says nothing in words that could be grouped).
        """
        row = self._search_row(text, **event)
        if row is None:
            return None
        await self._insert([row])
        return row.id

    def _search_row(
        self,
        text: str,
        *,
        result_count: int,
        account_id: str | None = None,
        category: str | None = None,
        facets: dict[str, Any] | None = None,
        top_ids: Sequence[str] = (),
        embedding: np.ndarray | bytes | None = None,
        search_id: str | None = None,
    ) -> SearchEvent | None:
        text = " ".join(text.split())[: self.settings.max_query_chars]
        if not text:
            return None
        if result_count < 0:
            raise BadInput("result_count must not be negative", field="result_count")
        return SearchEvent(
            id=search_id or new_id(),
            account_id=account_id,
            text=text,
            # Never refuse a search over its (possibly inferred) category: shorten it instead.
            category=" ".join((category or "").split())[:MAX_CATEGORY_CHARS] or None,
            facets=dict(facets or {}),
            result_count=result_count,
            top_ids=list(top_ids)[:20],
            embedding=vector_bytes(embedding),
            created_at=self.clock(),
        )

    def log_search_soon(self, text: str, **event: Any) -> str:
        """``log_search`` without making the requester wait for the write.

        The id is chosen and the row built here, and returned at once; rows are written in batches
        (``demand_log_batch_s``: one transaction for every search of that interval instead of one per
        search, which on a busy server competed with the next request's query encoding). Every reader of
        demand (``record_selection``, ``unmet_demand``, ``inbox``, alert sweeps) first calls ``flush``,
        so nothing logged is missed by a read that follows it.
        """
        search_id = new_id()
        row = self._search_row(text, search_id=search_id, **event)
        if row is None:
            return search_id
        self._log.add(row)
        return search_id

    async def flush(self) -> None:
        """Write every search logged so far, now (readers of demand, tests, shutdown)."""
        await self._log.flush()

    async def log_gap(
        self, actor: Actor, category: str, input_format: str, output_format: str, text: str | None = None
    ) -> str:
        """Record that no listed conditioning step converts ``input_format`` into ``output_format``.

        A gap is unmet demand from the moment it is hit: someone is building a pipeline and is stuck.
        """
        category = clean_category(category)
        input_format = _clean_format(input_format, "input_format")
        output_format = _clean_format(output_format, "output_format")
        text = " ".join((text or "").split())[: self.settings.max_query_chars]
        text = text or f"convert {_format_name(input_format)} to {_format_name(output_format)}"
        embedding = await self._encode([text]) if self.encoder is not None else None
        row = SearchEvent(
            account_id=actor.account_id,
            text=text,
            category=category,
            facets={SOURCE_FACET: PIPELINE_GAP, "input_format": input_format, "output_format": output_format},
            result_count=0,
            top_ids=[],
            embedding=vector_bytes(embedding[0]) if embedding is not None else None,
            created_at=self.clock(),
        )
        await self._insert([row])
        return row.id

    async def _insert(self, rows: list[SearchEvent]) -> None:
        async with self.db.session() as session:
            session.add_all(rows)
            if self.alert_hub.listener_count:  # alerted below: a sweep must not announce them again
                await session.flush()  # (marked before the commit, so no sweep reads them unmarked)
                self._alerted.update(
                    (row.id, as_utc(row.created_at)) for row in rows if row.result_count == 0
                )
        alerts = [
            DemandAlert(
                search_id=row.id,
                text=row.text,
                category=row.category,
                reason=_reason(0, row.facets),
                created_at=as_utc(row.created_at),
            )
            for row in rows
            if row.result_count == 0
        ]
        for alert in alerts:
            self.alert_hub.publish(alert)
        if self.relay is not None:
            await self.relay.publish_alerts(alerts)

    async def require_search(self, search_id: str, actor: Actor) -> None:
        """NOT_FOUND unless ``search_id`` names a logged search ``actor`` may select from (``may_select``);
        checked before acting on a selection."""
        if not await self._search_logged(search_id, actor):
            raise unknown_search(search_id)

    async def _search_logged(self, search_id: str, actor: Actor) -> bool:
        """Whether ``search_id`` is a logged search of ``actor``'s (``may_select``). This process's queue
        is written first; a search another API process served (the requester's next request may reach
        any of them) is in that process's queue for up to its ``demand_log_batch_s``, so an unknown id is
        looked for that long, plus ``OTHER_PROCESS_GRACE_S``, before it is declared unknown."""
        if len(search_id) > SEARCH_ID_CHARS:  # longer than any id this service issues: never logged
            return False
        await self.flush()
        deadline = time.monotonic() + self.settings.demand_log_batch_s + OTHER_PROCESS_GRACE_S
        while True:
            async with self.db.session() as session:
                found = (
                    await session.execute(select(SearchEvent.account_id).where(SearchEvent.id == search_id))
                ).first()
            if found is not None:
                return may_select(found.account_id, actor)
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(SEARCH_POLL_S)

    async def record_selection(self, search_id: str, listing_id: str, actor: Actor) -> None:
        """``actor`` picked ``listing_id`` from their search ``search_id``: that search's need was met.

        The first selection is kept (it says what the search led to); later ones change nothing.
        """
        if not await self._search_logged(search_id, actor):
            raise unknown_search(search_id)
        async with self.db.session() as session:
            row = await session.get(SearchEvent, search_id)
            if row is not None and row.selected_listing_id is None:
                row.selected_listing_id = listing_id

    # ------------------------------------------------------------------ reading demand

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
            conditions.append(_category_is(clean_category(category)))
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
                _category_is(sub.category),
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

    async def _unmet_events(self, conditions: list[ColumnElement[bool]]) -> list[_UnmetEvent]:
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
            _UnmetEvent(
                id=row.id,
                text=row.text,
                category=row.category,
                account_id=row.account_id,
                reason=_reason(row.result_count, row.facets),
                facets=row.facets or {},
                embedding=row.embedding,
                created_at=as_utc(row.created_at),
            )
            for row in rows
        ]

    async def _topics(self, events: list[_UnmetEvent], limit: int) -> list[DemandTopic]:
        """Group events by query text, then group the distinct queries by meaning."""
        by_query: dict[str, list[_UnmetEvent]] = {}
        for event in events:  # newest first, so the cap keeps the most recent distinct queries
            key = normalize_query(event.text)
            if key in by_query:
                by_query[key].append(event)
            elif len(by_query) < self.settings.demand_max_queries:
                by_query[key] = [event]
        if not by_query:
            return []
        queries = list(by_query.values())
        vectors = await self._query_vectors(queries)
        # 0.5-0.8 s of CPU at the 2000-query cap: off the event loop, so other requests keep flowing.
        return await asyncio.to_thread(self._group, queries, vectors, limit)

    def _group(self, queries: list[list[_UnmetEvent]], vectors: np.ndarray, limit: int) -> list[DemandTopic]:
        groups = cluster_by_similarity(vectors, self.settings.demand_topic_similarity)
        topics = [self._topic([queries[i] for i in group], vectors[group]) for group in groups]
        topics.sort(key=lambda topic: (-topic.count, -topic.last_seen.timestamp(), topic.label))
        return topics[:limit]

    async def _query_vectors(self, queries: list[list[_UnmetEvent]]) -> np.ndarray:
        """One normalized vector per distinct query: a stored one when usable, else encoded now."""
        dim = self.encoder.dim if self.encoder is not None else None
        stored = [_first_usable(events, dim) for events in queries]
        missing = [i for i, vector in enumerate(stored) if vector is None]
        if missing:
            encoded = await self._encode([queries[i][0].text for i in missing])
            for position, i in enumerate(missing):
                stored[i] = encoded[position]
            await self._backfill([queries[i] for i in missing], encoded)
        return normalize_rows(np.stack([v for v in stored if v is not None]))

    async def _encode(self, texts: list[str]) -> np.ndarray:
        if self.encoder is None:
            raise Unavailable("grouping demand needs the embedding model, and none is configured")
        return await asyncio.to_thread(self.encoder.encode_documents, texts)

    async def _backfill(self, queries: list[list[_UnmetEvent]], vectors: np.ndarray) -> None:
        """Store vectors computed for grouping so the next grouping does not encode them again."""
        async with self.db.session() as session:
            for events, vector in zip(queries, vectors, strict=True):
                ids = [event.id for event in events if event.embedding is None]
                if ids:
                    await session.execute(
                        update(SearchEvent)
                        .where(SearchEvent.id.in_(ids))
                        .values(embedding=vector_bytes(vector))
                    )

    def _topic(self, queries: list[list[_UnmetEvent]], vectors: np.ndarray) -> DemandTopic:
        weights = [len(events) for events in queries]
        texts = [events[0].text for events in queries]
        events = [event for group in queries for event in group]
        reasons = [event.reason for event in events]
        by_frequency = sorted(range(len(texts)), key=lambda i: (-weights[i], texts[i]))
        return DemandTopic(
            label=texts[central_member(vectors, weights)],
            keywords=keywords(texts, weights, KEYWORDS_PER_TOPIC),
            count=len(events),
            requesters=len({event.account_id for event in events if event.account_id}),
            no_results=reasons.count(NO_RESULTS),
            no_selection=reasons.count(NO_SELECTION),
            pipeline_gaps=reasons.count(PIPELINE_GAP),
            examples=tuple(texts[i] for i in by_frequency[:EXAMPLES_PER_TOPIC]),
            categories=_category_counts(events),
            format_gaps=_format_gaps(events),
            first_seen=min(event.created_at for event in events),
            last_seen=max(event.created_at for event in events),
        )

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(self, actor: Actor, category: str) -> DemandSubscriptionInfo:
        """Follow demand in ``category`` (idempotent; categories match regardless of case)."""
        require_producer(actor)
        category = clean_category(category)
        existing = await self._subscription(actor, category)
        if existing is not None:
            return existing
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
            return found
        await self._refollow(actor)
        return _subscription_info(row)

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

    async def _subscription(self, actor: Actor, category: str) -> DemandSubscriptionInfo | None:
        async with self.db.session() as session:
            row = await session.scalar(
                select(DemandSubscription).where(
                    DemandSubscription.account_id == actor.account_id,
                    same_category(DemandSubscription.category, category),
                )
            )
            return _subscription_info(row) if row else None

    # ------------------------------------------------------------------ live alerts

    async def alerts(self, actor: Actor, category: str | None = None) -> AsyncIterator[DemandAlert]:
        """Unmet searches as they happen, in ``category`` or else in the actor's subscribed categories
        (as they change: a later subscribe or unsubscribe applies to the running stream, at once when made
        through this process or relayed over Redis, else from the next sweep).

        No-result searches and pipeline gaps arrive when logged (those logged by another API process,
        when relayed over Redis, else from the next sweep); searches whose selection window closes while
        someone listens arrive from a sweep every ``demand_alert_sweep_s``.
        """
        require_producer(actor)
        if category is not None:
            listening = self.alert_hub.listen([clean_category(category)])
        else:
            # Registered before the subscriptions are read, so a subscribe in between is not missed;
            # later (un)subscribes change the running stream (``_refollow``).
            listening = self.alert_hub.listen([], follower=actor.account_id)
        async with listening as listener:
            if category is None:
                categories = [sub.category for sub in await self.subscriptions(actor)]
                if not listener.refollowed:  # else a (un)subscribe since then has set newer ones
                    listener.follow(categories)
                if not listener.categories:
                    raise BadInput(
                        "subscribe to a category first, or name one to listen to", field="category"
                    )
            self._ensure_sweeper()
            async for alert in listener:
                yield alert

    async def sweep_expired(self) -> int:
        """Alert on searches whose selection window closed since the last sweep without a selection, and
        on no-result searches and pipeline gaps other API processes logged since the last sweep. Streams
        that follow subscriptions first take up (un)subscribes made through other API processes."""
        await self._refollow_listening()
        return await self._sweep_closed_windows() + await self._sweep_others()

    async def _refollow_listening(self, accounts: set[str] | None = None) -> None:
        """A subscribe or unsubscribe through this process changes its running streams at once
        (``_refollow``); one through another API process reaches them here, from the database (for
        ``accounts`` only, when a relayed message says whose subscriptions changed)."""
        followers = self.alert_hub.followers
        if accounts is not None:
            followers &= accounts
        if not followers:
            return
        categories: dict[str, list[str]] = {account_id: [] for account_id in followers}
        async with self.db.session() as session:
            rows = await session.execute(
                select(DemandSubscription.account_id, DemandSubscription.category).where(
                    DemandSubscription.account_id.in_(followers)
                )
            )
            for account_id, category in rows:
                categories[account_id].append(category)
        for account_id, followed in categories.items():
            self.alert_hub.refollow(account_id, followed)

    async def _sweep_others(self) -> int:
        """Another process's no-result searches reach this process's listeners only through the database:
        each process alerts live on what it logs itself (``_insert``)."""
        if self._others_floor is None or self._others_swept_until is None:
            return 0  # nobody has listened yet
        now = self.clock()
        since = max(self._others_floor, self._others_swept_until - OTHERS_OVERLAP)
        events = await self._unmet_events([SearchEvent.result_count == 0, SearchEvent.created_at > since])
        fresh = [event for event in reversed(events) if event.id not in self._alerted]  # oldest first
        for event in fresh:
            self._alerted[event.id] = event.created_at
            self.alert_hub.publish(_alert_of(event))
        self._others_swept_until = max(self._others_swept_until, now)
        self._alerted = {key: at for key, at in self._alerted.items() if at > since}
        return len(fresh)

    async def _sweep_closed_windows(self) -> int:
        cutoff = self.clock() - self.window
        start = self._swept_until or cutoff
        self._swept_until = max(start, cutoff)
        if cutoff <= start:
            return 0
        events = await self._unmet_events(
            [
                SearchEvent.result_count > 0,
                SearchEvent.created_at > start,
                SearchEvent.created_at <= cutoff,
                _not_selected(),
            ]
        )
        for event in reversed(events):  # oldest first
            self.alert_hub.publish(_alert_of(event))
        return len(events)

    # ------------------------------------------------------------------ relayed from other API processes

    def relayed_alerts(self, alerts: list[DemandAlert]) -> None:
        """Alerts another API process logged: delivered now, and marked so the sweep does not repeat them."""
        if not self.alert_hub.listener_count:
            return
        for alert in alerts:
            if alert.search_id not in self._alerted:
                self._alerted[alert.search_id] = as_utc(alert.created_at)
                self.alert_hub.publish(alert)

    async def relayed_refollow(self, account_id: str) -> None:
        """Another API process changed ``account_id``'s subscriptions: its streams here re-read them."""
        await self._refollow_listening({account_id})

    async def relay_connected(self) -> None:
        """(Re)subscribed to the relay: what was published while away is swept from the database now."""
        if self.alert_hub.listener_count:
            await self.sweep_expired()

    def _ensure_sweeper(self) -> None:
        """Run the expiry sweep only while someone listens (it stops itself when nobody does); the relay,
        once started, runs until ``close``."""
        if self.relay is not None:
            self.relay.start()
        if self._sweeper is not None and not self._sweeper.done():
            return
        # Windows that closed while nobody listened are not news: start from now (the inbox has them).
        baseline = self.clock() - self.window
        self._swept_until = max(self._swept_until or baseline, baseline)
        self._others_floor = self._others_swept_until = self.clock()
        self._alerted = {}  # all older than the floor
        self._sweeper = asyncio.create_task(self._sweep_while_listened())

    async def _sweep_while_listened(self) -> None:
        while self.alert_hub.listener_count:
            await asyncio.sleep(self.settings.demand_alert_sweep_s)
            try:
                await self.sweep_expired()
            except Exception:  # a database hiccup must not end alerts for everyone
                logger.exception("demand alert sweep failed; retrying next interval")

    async def close(self) -> None:
        await self._log.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self.relay is not None:
            await self.relay.close()


def _alert_of(event: _UnmetEvent) -> DemandAlert:
    return DemandAlert(
        search_id=event.id,
        text=event.text,
        category=event.category,
        reason=event.reason,
        created_at=event.created_at,
    )


def _decode(blob: bytes | None, dim: int | None) -> np.ndarray | None:
    """A stored query vector, or None when absent or from a model of another dimension."""
    if not blob or len(blob) % 4:
        return None
    vector = np.frombuffer(blob, dtype=np.float32)
    if dim is not None and vector.shape[0] != dim:
        return None
    return vector


def _first_usable(events: list[_UnmetEvent], dim: int | None) -> np.ndarray | None:
    for event in events:
        vector = _decode(event.embedding, dim)
        if vector is not None:
            return vector
    return None


def _category_counts(events: list[_UnmetEvent]) -> tuple[CategoryCount, ...]:
    counts: dict[str, int] = {}
    for event in events:
        if event.category:
            counts[event.category] = counts.get(event.category, 0) + 1
    return tuple(CategoryCount(c, n) for c, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _format_gaps(events: list[_UnmetEvent]) -> tuple[FormatGap, ...]:
    counts: dict[tuple[str, str], int] = {}
    for event in events:
        if event.reason == PIPELINE_GAP:
            pair = (str(event.facets.get("input_format")), str(event.facets.get("output_format")))
            counts[pair] = counts.get(pair, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(FormatGap(source, target, n) for (source, target), n in ordered)


def _subscription_info(row: DemandSubscription) -> DemandSubscriptionInfo:
    return DemandSubscriptionInfo(
        category=row.category,
        created_at=as_utc(row.created_at),
        last_seen_at=as_utc(row.last_seen_at) if row.last_seen_at else None,
    )
