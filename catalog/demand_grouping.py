"""Grouping unmet searches into topics a producer can act on: what the report and the inbox show.

Events are grouped by query text first (a repeated query is one need, asked often), then the distinct
queries by meaning (``catalog.demand_topics``), each with one vector: the one the search stored, or one
encoded now and stored back. Separate from reading the log because it is the part that needs the
embedding model and the CPU; the report and the inbox (``catalog.demand_report``) hand it their events.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import update

from catalog.demand_topics import central_member, cluster_by_similarity, keywords, normalize_query
from catalog.demand_unmet import NO_RESULTS, NO_SELECTION, PIPELINE_GAP, UnmetEvent
from infra.db import Database
from infra.errors import Unavailable
from infra.settings import Settings
from infra.tables import SearchEvent
from search.embeddings import normalize_rows

if TYPE_CHECKING:
    from search.embeddings import Encoder

EXAMPLES_PER_TOPIC = 5
KEYWORDS_PER_TOPIC = 3


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


class TopicGrouping:
    """The grouping part of ``DemandService`` (``catalog.demand``), which provides these attributes."""

    db: Database
    settings: Settings
    encoder: Encoder | None

    async def _topics(self, events: list[UnmetEvent], limit: int) -> list[DemandTopic]:
        """Group events by query text, then group the distinct queries by meaning."""
        by_query: dict[str, list[UnmetEvent]] = {}
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

    def _group(self, queries: list[list[UnmetEvent]], vectors: np.ndarray, limit: int) -> list[DemandTopic]:
        groups = cluster_by_similarity(vectors, self.settings.demand_topic_similarity)
        topics = [self._topic([queries[i] for i in group], vectors[group]) for group in groups]
        topics.sort(key=lambda topic: (-topic.count, -topic.last_seen.timestamp(), topic.label))
        return topics[:limit]

    async def _query_vectors(self, queries: list[list[UnmetEvent]]) -> np.ndarray:
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

    async def _backfill(self, queries: list[list[UnmetEvent]], vectors: np.ndarray) -> None:
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

    def _topic(self, queries: list[list[UnmetEvent]], vectors: np.ndarray) -> DemandTopic:
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


def vector_bytes(vector: np.ndarray | bytes | None) -> bytes | None:
    """How a query embedding is stored: raw float32 (the search service passes its query vector)."""
    if vector is None or isinstance(vector, bytes):
        return vector
    return np.asarray(vector, dtype=np.float32).reshape(-1).tobytes()


def _decode(blob: bytes | None, dim: int | None) -> np.ndarray | None:
    """A stored query vector, or None when absent or from a model of another dimension."""
    if not blob or len(blob) % 4:
        return None
    vector = np.frombuffer(blob, dtype=np.float32)
    if dim is not None and vector.shape[0] != dim:
        return None
    return vector


def _first_usable(events: list[UnmetEvent], dim: int | None) -> np.ndarray | None:
    for event in events:
        vector = _decode(event.embedding, dim)
        if vector is not None:
            return vector
    return None


def _category_counts(events: list[UnmetEvent]) -> tuple[CategoryCount, ...]:
    counts: dict[str, int] = {}
    for event in events:
        if event.category:
            counts[event.category] = counts.get(event.category, 0) + 1
    return tuple(CategoryCount(c, n) for c, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _format_gaps(events: list[UnmetEvent]) -> tuple[FormatGap, ...]:
    counts: dict[tuple[str, str], int] = {}
    for event in events:
        if event.reason == PIPELINE_GAP:
            pair = (str(event.facets.get("input_format")), str(event.facets.get("output_format")))
            counts[pair] = counts.get(pair, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(FormatGap(source, target, n) for (source, target), n in ordered)
