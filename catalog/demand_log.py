"""Logging demand: each search, each pipeline gap, and what a requester selected from a search.

Searches are logged on the search path, so the write is batched off it (``log_search_soon``); a no-result
search or a gap is announced to live listeners as it is written. A selection closes a search's need
(``record_selection``), whichever API process served the search. Separate because it is the write side
of the log, on the requester's path, while everything else in the service serves producers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from catalog.actors import Actor
from catalog.clock import as_utc
from catalog.demand_alerts import DemandAlert, DemandAlertHub
from catalog.demand_grouping import vector_bytes
from catalog.demand_relay import DemandRelay
from catalog.demand_unmet import MAX_CATEGORY_CHARS, PIPELINE_GAP, SOURCE_FACET, clean_category, unmet_reason
from infra.batching import BatchWriter
from infra.db import Database
from infra.errors import BadInput, NotFound
from infra.settings import Settings
from infra.tables import SearchEvent, new_id

if TYPE_CHECKING:
    from search.embeddings import Encoder

MAX_FORMAT_CHARS = 64
# Beyond its logging batch, how long another API process may take to commit a search it served.
OTHER_PROCESS_GRACE_S = 1.0
SEARCH_POLL_S = 0.05
SEARCH_ID_CHARS = SearchEvent.__table__.c.id.type.length


def _clean_format(value: str, field: str) -> str:
    cleaned = str(value).strip()
    if not cleaned or len(cleaned) > MAX_FORMAT_CHARS:
        raise BadInput(f"{field} must be 1-{MAX_FORMAT_CHARS} characters", field=field)
    return cleaned


def _format_name(data_format: str) -> str:
    """``image@1`` reads as "image" in a sentence (the version says nothing about the need)."""
    return data_format.split("@", 1)[0]


def may_select(searcher_id: str | None, actor: Actor) -> bool:
    """Whether ``actor`` may mark a search made by account ``searcher_id`` as selected (a view, a run or a
    pipeline step through its searchId): only the account that searched. A search made anonymously has
    no account to bind it to: whoever holds its id may (the id, 128 random bits, went only to whoever
    searched). Anyone else is told the search does not exist, as for an unknown id."""
    return searcher_id is None or searcher_id == actor.account_id


def unknown_search(search_id: str) -> NotFound:
    """The one refusal of a searchId the caller may not use, unknown or another account's."""
    return NotFound(f"no search with id {search_id!r}")


class DemandLog:
    """The logging part of ``DemandService`` (``catalog.demand``), which provides these attributes; a gap
    is encoded through ``_encode`` (``catalog.demand_grouping``)."""

    db: Database
    settings: Settings
    encoder: Encoder | None
    alert_hub: DemandAlertHub
    relay: DemandRelay | None
    clock: Callable[[], datetime]
    _alerted: dict[str, datetime]
    _log: BatchWriter[SearchEvent]

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
                reason=unmet_reason(0, row.facets),
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
