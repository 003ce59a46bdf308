"""Search: validate the request, filter by facets, fuse keyword and vector candidates, rank, explain, log.

Facets filter *before* ranking (the backend applies them, visibility included). A RELEVANCE search with
text asks the backend for keyword and vector candidates under the same filters and lets
``ranking.Ranker`` fuse them with the interpretation of the text and the quality signals; every result
carries the parts of its score. Other sorts (USAGE, ACCURACY, LATENCY, NEWEST) order the same candidates
— or, without text, every listing passing the facets — by that field. Results are hydrated from the
view cache when it holds the version the index has, else from the database through the same visibility
rule as every other read, and each is re-checked for the requester. A search with a next page keeps what
it ranked as a snapshot (``catalog.search_snapshots``) that its later pages read, so they never repeat or
skip a listing however the catalog changes in between; only hydration is done again for them.

A result is exactly as fresh as the index: a change made through this process shows at once, but one
made by another process (worker, CLI) only after this process's next ``ListingIndex.sync`` — up to
``SYNC_INTERVAL_S`` (1 s) late for a listing made private, unshared or suspended, up to
``DELETION_CHECK_INTERVAL_S`` (10 s) for a deleted one. Reading every page from the database would close
that window at the cost of a round trip per search, which the latency budget does not pay
(``view_cache``). The first page of each text search is logged for unmet demand (``catalog.demand``); its
id comes back so a view, run or pipeline step can mark the search satisfied.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from catalog.access import can_see_view
from catalog.actors import Actor
from catalog.choices import parse_choice, parse_choices
from catalog.demand import DemandService
from catalog.enums import ListingKind, SortOrder
from catalog.formats import normalize_format
from catalog.indexing import ListingIndex
from catalog.listing_input import check_resource_amounts
from catalog.listing_view import ListingView
from catalog.listings import ListingService
from catalog.pipelines.search_context import PipelineSlot, slot_misfits
from catalog.search_snapshots import Cursor, Snapshot, SnapshotStore, decode_cursor
from catalog.text_checks import refuse_nul
from catalog.understanding_feed import UnderstandingFeed
from catalog.view_cache import ViewCache
from infra.errors import BadInput, Unavailable
from infra.settings import Settings
from infra.timing import stage
from ranking.pending import PendingResults
from ranking.ranker import Ranker
from ranking.types import Interpretation, RankedResult, ScorePart
from search.types import Hit, IndexedListing, SearchFilters

if TYPE_CHECKING:
    from concurrent.futures import Future

    from catalog.pipelines import PipelineService
    from search.embeddings import QueryEncoding

logger = logging.getLogger("mlrepo.catalog")

MAX_FACET_CHARS = 100
# The hardware-fit facet's fields as ``SearchInput.resources`` names them.
RESOURCE_FACETS = {"cpu": "resources.cpu", "memory_mb": "resources.memoryMb", "gpu": "resources.gpu"}
MAX_OFFSET = 10_000  # the deepest a facet-only search pages (the most listings its snapshot holds)
# The stages a search is timed in (``infra.timing``, the ``Server-Timing`` header), in the order it runs
# them; a search without text runs only the first and the last.
SEARCH_STAGES = ("index_sync", "encode", "keyword", "vector", "projections", "rank", "hydrate")
INDEX_SYNC, ENCODE, KEYWORD, VECTOR, PROJECTIONS, RANK, HYDRATE = SEARCH_STAGES


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """The requester's hardware: only listings whose suggested requirements fit are returned."""

    cpu: float | None = None
    memory_mb: int | None = None
    gpu: int | None = None


@dataclass(frozen=True, slots=True)
class SearchRequest:
    text: str = ""
    category: str | None = None
    subcategory: str | None = None
    kinds: Sequence[str] | None = None
    input_format: str | None = None
    output_format: str | None = None
    max_latency_ms: float | None = None
    min_accuracy: float | None = None
    resources: ResourceLimits | None = None
    verified_only: bool = False
    sort: str = SortOrder.RELEVANCE.value
    limit: int = 10
    after: str | None = None
    # Search in the context of a pipeline: candidates for the slot at ``position`` (default: the end).
    pipeline_id: str | None = None
    position: int | None = None


@dataclass(frozen=True, slots=True)
class SearchResult:
    listing: ListingView
    score: float
    parts: tuple[ScorePart, ...]

    @property
    def explanation(self) -> str:
        return "; ".join(part.detail for part in self.parts)


@dataclass(frozen=True, slots=True)
class SearchResponse:
    results: list[SearchResult]
    # With text: how many candidates were ranked (keyword and vector candidates together);
    # without text: every listing passing the facets.
    total_count: int
    has_next_page: bool
    end_cursor: str | None
    search_id: str | None
    interpretation: Interpretation | None = None
    notes: list[str] = field(default_factory=list)  # what was inferred, in sentences

    @property
    def ids(self) -> list[str]:
        return [r.listing.id for r in self.results]


# ---------------------------------------------------------------------------- validation (pure)


def _finite(
    name: str, value: float | None, low: float | None = 0.0, high: float | None = None
) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInput(f"{name} must be a number; got {value!r}", field=name)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadInput(f"{name} must be {bounds}; got {value!r}", field=name)
    return float(value)


def check_no_nul(request: SearchRequest) -> None:
    """NUL is never meaningful in a search, and PostgreSQL cannot store it: the search's log row would
    fail, and with it every search logged in the same batch."""
    for name, value in (
        ("text", request.text),
        ("category", request.category),
        ("subcategory", request.subcategory),
        ("inputFormat", request.input_format),
        ("outputFormat", request.output_format),
        ("after", request.after),
        ("pipeline", request.pipeline_id),
    ):
        refuse_nul(name, value)


def _facet_text(name: str, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > MAX_FACET_CHARS:
        raise BadInput(f"{name} is longer than {MAX_FACET_CHARS} characters", field=name)
    return value.strip()


def parse_sort(sort: str | None) -> str:
    return parse_choice(SortOrder, sort or SortOrder.RELEVANCE.value, "sort").value


def parse_kinds(kinds: Sequence[str] | None) -> tuple[str, ...] | None:
    return parse_choices(ListingKind, kinds, "kinds")


def _format_facet(name: str, value: str | None) -> str | None:
    value = _facet_text(name, value)
    if value is None:
        return None
    try:
        return normalize_format(value)
    except BadInput as exc:
        raise BadInput(f"{name}: {exc.message}", field=name) from None


def build_filters(request: SearchRequest, actor: Actor, category: str | None) -> SearchFilters:
    """The facets of ``request`` as backend filters, with the viewer for visibility (raises BadInput)."""
    resources = request.resources or ResourceLimits()
    cpu = _finite("resources.cpu", resources.cpu, low=None)
    gpu = _finite("resources.gpu", resources.gpu, low=None)
    memory = _finite("resources.memoryMb", resources.memory_mb, low=None)
    # The hardware-fit facet takes the amounts a job's ``resources`` takes: one rule for both.
    check_resource_amounts({"cpu": cpu, "memory_mb": memory, "gpu": gpu}, RESOURCE_FACETS.__getitem__)
    return SearchFilters(
        kinds=parse_kinds(request.kinds),
        category=category,
        subcategory=_facet_text("subcategory", request.subcategory),
        input_format=_format_facet("inputFormat", request.input_format),
        output_format=_format_facet("outputFormat", request.output_format),
        max_latency_ms=_finite("maxLatencyMs", request.max_latency_ms),
        min_accuracy=_finite("minAccuracy", request.min_accuracy, 0.0, 1.0),
        cpu=cpu,
        memory_mb=int(memory) if memory is not None else None,
        gpu=int(gpu) if gpu is not None else None,
        verified_only=bool(request.verified_only),
        viewer_id=actor.account_id,
        viewer_is_admin=actor.is_admin,
    )


def request_fingerprint(request: SearchRequest) -> str:
    """Ties a cursor to the search it came from (a cursor from another search is an error, not garbage)."""
    material = {k: v for k, v in asdict(request).items() if k not in ("after", "limit")}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- sorting by a field


def _sort_value(doc: IndexedListing, sort: str) -> float:
    """Larger is better; unknown values sort last."""
    if sort == SortOrder.USAGE:
        return doc.relative_usage
    if sort == SortOrder.ACCURACY:
        return doc.accuracy if doc.accuracy is not None else -math.inf
    if sort == SortOrder.LATENCY:
        return -doc.latency_p50_ms if doc.latency_p50_ms is not None else -math.inf
    return doc.created_at


def _field_score(doc: IndexedListing, sort: str) -> float:
    """The sorted field as a browse reports it for its score (the backends' ``filtered`` hit score): the
    field itself, a latency included (sorted ascending, not negated as in ``_sort_value``); 0 unknown."""
    if sort == SortOrder.LATENCY:
        return doc.latency_p50_ms if doc.latency_p50_ms is not None else 0.0
    value = _sort_value(doc, sort)
    return value if math.isfinite(value) else 0.0


def _sort_part(doc: IndexedListing, sort: str, counted: bool = True) -> ScorePart:
    """Why a result sits where it does under ``sort``. Without text the field is the score; with text the
    score stays the relevance, so the part adds nothing (``counted=False``) and the parts still sum to it.
    """
    details = {
        SortOrder.USAGE: f"sorted by usage: {doc.relative_usage:.0%} of its category's most used",
        SortOrder.ACCURACY: f"sorted by accuracy: {doc.accuracy:.4g}"
        if doc.accuracy is not None
        else "no accuracy",
        SortOrder.LATENCY: f"sorted by latency: p50 {doc.latency_p50_ms:.4g} ms"
        if doc.latency_p50_ms is not None
        else "no latency measured",
        SortOrder.NEWEST: "sorted by newest",
    }
    return ScorePart(sort, _field_score(doc, sort) if counted else 0.0, details[SortOrder(sort)])


def _sorted_part(result: RankedResult, projections: Mapping[str, IndexedListing], sort: str) -> RankedResult:
    """A text search's explained result under ``sort``: led by why it sits there (adding nothing to the
    relevance score, ``_sort_part``); as it is by relevance."""
    if sort == SortOrder.RELEVANCE:
        return result
    part = _sort_part(projections[result.id], sort, counted=False)
    return RankedResult(result.id, result.score, (part, *result.parts))


async def encoded(pending: Future[QueryEncoding]) -> QueryEncoding:
    """The encoding once the model thread has it. A cached query's future is done already: read at once,
    not through ``asyncio.wrap_future``, which hands the result over by the loop's self-pipe (a write, a
    wake-up and a read, and every other ready task run in between) for a value that is already here."""
    if pending.done():
        return pending.result()
    return await asyncio.wrap_future(pending)


class SearchService:
    def __init__(
        self,
        settings: Settings,
        index: ListingIndex,
        listings: ListingService,
        demand: DemandService,
        ranker: Ranker,
        feed: UnderstandingFeed,
        snapshots: SnapshotStore,
        pipelines: PipelineService | None = None,
    ) -> None:
        self.settings = settings
        self.snapshots = snapshots
        self.pipelines = pipelines
        self.index = index
        self.listings = listings
        self.demand = demand
        self.ranker = ranker
        self.feed = feed
        self.views = ViewCache()

    def _validate(
        self, request: SearchRequest, actor: Actor
    ) -> tuple[str, str, SearchFilters, Cursor | None]:
        text = request.text or ""
        if not isinstance(text, str):
            raise BadInput("text must be a string", field="text")
        check_no_nul(request)
        if request.position is not None and request.pipeline_id is None:
            raise BadInput("position names a slot of a pipeline: give the pipeline too", field="position")
        if len(text) > self.settings.max_query_chars:
            raise BadInput(
                f"text is longer than {self.settings.max_query_chars} characters ({len(text)})", field="text"
            )
        text = " ".join(text.split())
        limit = request.limit
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= self.settings.max_page_size
        ):
            raise BadInput(
                f"limit must be between 1 and {self.settings.max_page_size}; got {limit!r}", field="limit"
            )
        sort = parse_sort(request.sort)
        category = _facet_text("category", request.category)
        if category is not None:
            category = self.feed.canonical_category(category)
        filters = build_filters(request, actor, category)
        if filters.subcategory is not None:  # a facet "case-insensitive" like category (README)
            filters = replace(filters, subcategory=self.feed.canonical_subcategory(filters.subcategory))
        cursor = decode_cursor(request.after) if request.after else None
        return text, sort, filters, cursor

    async def search(self, actor: Actor, request: SearchRequest) -> SearchResponse:
        text, sort, filters, cursor = self._validate(request, actor)
        slot = None
        if request.pipeline_id is not None:
            filters, slot = await self._narrow_to_slot(actor, request, filters)
        if self.index.backend is None:
            raise Unavailable("this process holds no search index")
        if cursor is not None:
            return await self._later_page(actor, request, cursor, filters, slot, sort)
        with stage(INDEX_SYNC):
            await self.index.sync()
        interpretation: Interpretation | None = None
        query_vector: np.ndarray | None = None
        browse_order = rest = None
        if text:
            query_vector, keyword_hits = await self._encode_and_match(text, filters, self._depth())
            interpretation, ranked, rest, total = self._rank(
                text, query_vector, keyword_hits, filters, sort, request.limit
            )
            held, exhausted = total, True  # every candidate, kept unexplained (``rest``)
        else:
            browse_order = sort
            chunk = max(self.settings.search_snapshot_chunk, request.limit)
            ranked, total = self._browse(filters, sort, 0, chunk)
            held, exhausted = len(ranked), total <= chunk
        page = ranked[: request.limit]
        snapshot = None
        if len(page) < held or not exhausted:  # only a search with a next page needs its ranking kept
            snapshot = self.snapshots.keep_soon(
                actor.account_id,
                request_fingerprint(request),
                ranked if rest is None else [],
                total,
                browse_order=browse_order,
                exhausted=exhausted,
                interpretation=interpretation,
                later=(rest, held) if rest is not None else None,
            )
        results, total = await self._hydrated_page(actor, page, total, slot)
        search_id = None
        if text:  # the first page only: paging on is not a new need
            inferred = interpretation.top.category if interpretation and interpretation.top else None
            search_id = self.demand.log_search_soon(
                text,
                result_count=total,
                account_id=actor.account_id,
                category=filters.category or inferred,
                facets=self._facets(request, sort),
                top_ids=[r.listing.id for r in results],
                embedding=query_vector,
            )
        return self._response(results, total, snapshot, len(page), search_id, interpretation, slot)

    async def _later_page(
        self,
        actor: Actor,
        request: SearchRequest,
        cursor: Cursor,
        filters: SearchFilters,
        slot: PipelineSlot | None,
        sort: str,
    ) -> SearchResponse:
        """A page after the first: read from the search's snapshot, never ranked again (its cursor holds
        the fingerprint of the request, so ``sort`` is the first page's)."""
        snapshot = await self.snapshots.open(cursor, actor.account_id, request_fingerprint(request))
        with stage(INDEX_SYNC):
            await self.index.sync()
        end = cursor.position + request.limit
        if end > snapshot.held and not snapshot.exhausted:
            snapshot = await self._extend(snapshot, filters)
        page = self._explained(snapshot.page(cursor.position, end), snapshot.interpretation, sort)
        results, total = await self._hydrated_page(actor, page, snapshot.total, slot)
        return self._response(results, total, snapshot, end, None, snapshot.interpretation, slot)

    def _explained(
        self, page: list[RankedResult], interpretation: Interpretation | None, sort: str
    ) -> list[RankedResult]:
        """The page with explanations built for the entries its snapshot kept unexplained (every text
        search's results after the first page), from the listings as the index holds them now, led by
        the sort's part as on the first page (``_sorted_part``); an entry whose listing left the index
        stays as it is (hydration drops it)."""
        pending = [r.id for r in page if r.reasons is not None]
        if not pending or interpretation is None:
            return page
        backend = self.index.backend
        assert backend is not None
        with stage(PROJECTIONS):
            projections = backend.get(pending, with_embeddings=False)
        with stage(RANK):
            return [
                _sorted_part(
                    self.ranker.explain_reasons(r, projections[r.id], interpretation), projections, sort
                )
                if r.reasons is not None and r.id in projections
                else r
                for r in page
            ]

    async def _hydrated_page(
        self, actor: Actor, page: list[RankedResult], total: int, slot: PipelineSlot | None
    ) -> tuple[list[SearchResult], int]:
        """The page's listings as ``actor`` may see them now (those hidden since are dropped)."""
        with stage(HYDRATE):
            hydrated = await self._hydrate(actor, [r.id for r in page])
        results = [SearchResult(hydrated[r.id], r.score, r.parts) for r in page if r.id in hydrated]
        if slot is not None:
            fitting = [r for r in results if not slot_misfits(slot, r.listing)]
            total -= len(results) - len(fitting)
            results = fitting
        return results, total

    def _response(
        self,
        results: list[SearchResult],
        total: int,
        snapshot: Snapshot | None,
        position: int,
        search_id: str | None,
        interpretation: Interpretation | None,
        slot: PipelineSlot | None,
    ) -> SearchResponse:
        # Paging walks what was ranked: listings dropped from this page still leave the rest ahead.
        has_next = snapshot is not None and (position < snapshot.held or not snapshot.exhausted)
        return SearchResponse(
            results=results,
            total_count=total,
            has_next_page=has_next,
            end_cursor=snapshot.cursor(position, self.snapshots.clock().timestamp())
            if snapshot is not None and has_next
            else None,
            search_id=search_id,
            interpretation=interpretation,
            notes=(interpretation.describe() if interpretation else []) + list(slot.notes if slot else ()),
        )

    async def _extend(self, snapshot: Snapshot, filters: SearchFilters) -> Snapshot:
        """The next chunk of a facet-only search: the first listings of the current order it does not hold.

        Held listings keep their place (nothing repeats) and every visible listing not held yet is still
        ahead (nothing is skipped); only the order within the new chunk is as of now."""
        assert snapshot.browse_order is not None
        chunk = self.settings.search_snapshot_chunk
        depth = min(len(snapshot.entries) + chunk, MAX_OFFSET)
        fresh, _ = self._browse(filters, snapshot.browse_order, 0, depth)
        held = {r.id for r in snapshot.entries}
        rest = [r for r in fresh if r.id not in held]
        exhausted = (len(fresh) < depth and len(rest) <= chunk) or depth >= MAX_OFFSET
        room = max(MAX_OFFSET - len(snapshot.entries), 0)
        return await self.snapshots.append(snapshot, rest[: min(chunk, room)], exhausted)

    async def _encode_and_match(
        self, text: str, filters: SearchFilters, depth: int
    ) -> tuple[np.ndarray, list[Hit]]:
        """The query vector and the keyword candidates.

        The keyword query weighs each request word by how the model read it (``ranking.term_weights``),
        so BM25 waits for the encode, whose forward pass gives those weights; with the weights off, BM25
        runs while the model encodes on its own thread instead."""
        backend, encoder = self.index.backend, self.index.encoder
        assert backend is not None
        if self.ranker.weights.keyword_term_weight_power <= 0:
            pending = encoder.submit_query(text)
            with stage(KEYWORD):
                keyword_hits = backend.keyword(text, filters, depth)
            with stage(ENCODE):  # what is left of it once BM25 is done
                return (await encoded(pending)).vector, keyword_hits
        with stage(ENCODE):
            encoding = await encoded(encoder.submit_query(text, with_words=True))
        with stage(KEYWORD):
            word_weights = self.ranker.keyword_word_weights(encoding.word_distances or {})
            return encoding.vector, backend.keyword(text, filters, depth, word_weights)

    async def _narrow_to_slot(
        self, actor: Actor, request: SearchRequest, filters: SearchFilters
    ) -> tuple[SearchFilters, PipelineSlot]:
        """Facets restricted to what fits the pipeline slot (formats, step kinds), before ranking; the
        exact schemas are checked on the hydrated rows (``slot_misfits``)."""
        if self.pipelines is None:
            raise Unavailable("this process cannot search in the context of a pipeline")
        return await self.pipelines.narrow_search(actor, request.pipeline_id, request.position, filters)

    async def _hydrate(self, actor: Actor, ids: list[str]) -> dict[str, ListingView]:
        """Full listings for a page: from the cache when it holds the version the index has, else from
        the database (which applies the visibility rule itself); either way re-checked for ``actor``.

        A cached view is only as fresh as the index: another process's change to it is seen after the
        next sync (see the module docstring), not here."""
        found: dict[str, ListingView] = {}
        missing = []
        for listing_id in ids:
            view = self.views.get(listing_id, self.index.version_of(listing_id))
            if view is None:
                missing.append(listing_id)
            elif can_see_view(actor, view):
                found[listing_id] = view
        if missing:
            fetched = await self.listings.get_many(actor, missing)
            self.views.put(list(fetched.values()))
            found.update(fetched)
        return found

    async def flush(self) -> None:
        """Wait until every search logged so far is written (tests, shutdown)."""
        await self.demand.flush()

    def _depth(self) -> int:
        """Candidates asked of each list: deep enough for fusion and to fill the largest page.

        The same for every page of a search: fusion scales scores over the candidate lists and the
        interpretation reads them, so a deeper retrieval for a later page would re-rank the earlier
        ones, and paging would repeat some listings and skip others. A text search therefore pages
        through exactly the candidates its first page ranked (``total_count``)."""
        return max(self.ranker.weights.candidate_depth, self.settings.max_page_size)

    def _rank(
        self,
        text: str,
        query_vector: np.ndarray,
        keyword_hits: list[Hit],
        filters: SearchFilters,
        sort: str,
        needed: int,
    ) -> tuple[Interpretation, list[RankedResult], Callable[[], PendingResults] | None, int]:
        """The first ``needed`` ranked results, a function giving every candidate unexplained, and how
        many candidates were ranked.

        Every candidate is scored, but only the first ``needed`` get their explanation built here; the
        function gives them all, unexplained, when called (off the first page's path, for its snapshot;
        ``ranking.pending``). Another sort than relevance only reorders the same candidates (by its field,
        then relevance, then id), so it takes the same path, its results led by the sort's part. The
        ranker ranks exactly the candidates that have a projection, so their count is the total."""
        backend = self.index.backend
        assert backend is not None
        with stage(VECTOR):
            vector_hits: list[Hit] = backend.vector(query_vector, filters, self._depth())
        with stage(PROJECTIONS):
            projections = backend.get(
                list(dict.fromkeys([h.id for h in keyword_hits] + [h.id for h in vector_hits])),
                with_embeddings=False,  # ranking reads labels, formats and quality fields, never vectors
            )
        order_key = None
        if sort != SortOrder.RELEVANCE:

            def order_key(candidate: tuple[float, str]) -> tuple[float, float, str]:
                negative_score, listing_id = candidate
                return -_sort_value(projections[listing_id], sort), negative_score, listing_id

        with stage(RANK):
            interpretation, ranked, rest = self.ranker.rank_in_parts(
                text, query_vector, keyword_hits, vector_hits, projections, limit=needed, order_key=order_key
            )
        ranked = [_sorted_part(r, projections, sort) for r in ranked]
        return interpretation, ranked, rest, len(projections)

    def _browse(
        self, filters: SearchFilters, sort: str, offset: int, limit: int
    ) -> tuple[list[RankedResult], int]:
        """No text: every listing passing the facets, by ``sort`` (RELEVANCE means NEWEST here)."""
        backend = self.index.backend
        assert backend is not None
        order = SortOrder.NEWEST.value if sort == SortOrder.RELEVANCE else sort
        hits = backend.filtered(filters, order, limit, offset)
        total = backend.count(filters)
        projections = backend.get([h.id for h in hits], with_embeddings=False)
        ranked = [
            RankedResult(h.id, h.score, (_sort_part(projections[h.id], order),))
            for h in hits
            if h.id in projections
        ]
        return ranked, total

    @staticmethod
    def _facets(request: SearchRequest, sort: str) -> dict[str, Any]:
        facets = {
            k: v
            for k, v in asdict(request).items()
            if k not in ("text", "after", "limit") and v not in (None, False, (), [])
        }
        facets["sort"] = sort
        return facets

    async def record_selection(self, search_id: str, listing_id: str, actor: Actor) -> None:
        """``actor`` selected ``listing_id`` from their search ``search_id`` (unmet-demand bookkeeping)."""
        await self.demand.record_selection(search_id, listing_id, actor)
