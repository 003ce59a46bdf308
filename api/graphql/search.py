"""GraphQL search: ``Query.search(input: SearchInput!)`` with facets, sorts, cursor paging and, for every
result, the parts of its score as an explanation a person can read."""

from __future__ import annotations

import strawberry

from api.graphql.types import Listing, ListingKind, PageInfo, ResourcesInput, SortOrder
from catalog import search_service as domain


@strawberry.input(description="What to look for. Facets filter before ranking; `text` may be empty.")
class SearchInput:
    text: str = strawberry.field(default="", description="The need in your own words (≤ max_query_chars).")
    category: str | None = None
    subcategory: str | None = None
    kinds: list[ListingKind] | None = None
    input_format: str | None = None
    output_format: str | None = None
    max_latency_ms: float | None = None
    min_accuracy: float | None = strawberry.field(default=None, description="0..1")
    resources: ResourcesInput | None = strawberry.field(
        default=None, description="The requester's hardware: only listings whose suggested needs fit it."
    )
    verified_only: bool = False
    sort: SortOrder = SortOrder.RELEVANCE
    limit: int = strawberry.field(default=10, description="1..max_page_size results per page.")
    after: str | None = strawberry.field(
        default=None,
        description="endCursor of the previous page of the same search: later pages read what the first "
        "ranked, for search_snapshot_ttl_s (then CURSOR_EXPIRED: search again).",
    )
    pipeline: strawberry.ID | None = strawberry.field(
        default=None,
        description="One of your pipelines: only listings that fit the slot at `position` are returned "
        "(they read what the step before emits and emit what the step after reads).",
    )
    position: int | None = strawberry.field(
        default=None,
        description="The slot in the pipeline's step list: 0 = before the first step; default: the end.",
    )

    def to_request(self) -> domain.SearchRequest:
        resources = self.resources
        return domain.SearchRequest(
            text=self.text,
            category=self.category,
            subcategory=self.subcategory,
            kinds=tuple(kind.value for kind in self.kinds) if self.kinds else None,
            input_format=self.input_format,
            output_format=self.output_format,
            max_latency_ms=self.max_latency_ms,
            min_accuracy=self.min_accuracy,
            resources=domain.ResourceLimits(
                cpu=resources.cpu, memory_mb=resources.memory_mb, gpu=resources.gpu
            )
            if resources
            else None,
            verified_only=self.verified_only,
            sort=self.sort.value,
            limit=self.limit,
            after=self.after,
            pipeline_id=str(self.pipeline) if self.pipeline is not None else None,
            position=self.position,
        )


@strawberry.type(description="One additive part of a result's score: a machine name, its value, a sentence.")
class ScorePart:
    name: str
    value: float
    detail: str


@strawberry.type
class Explanation:
    summary: str = strawberry.field(description="The parts' sentences, largest contribution first.")
    parts: list[ScorePart]


@strawberry.type
class SearchResult:
    listing: Listing
    score: float
    explanation: Explanation

    @classmethod
    def from_result(cls, result: domain.SearchResult) -> SearchResult:
        parts = [ScorePart(name=p.name, value=p.value, detail=p.detail) for p in result.parts]
        return cls(
            listing=Listing.from_view(result.listing),
            score=result.score,
            explanation=Explanation(summary=result.explanation, parts=parts),
        )


@strawberry.type(description="A category (and subcategory) the text was understood to mean.")
class CategoryGuess:
    category: str
    subcategory: str | None
    probability: float


@strawberry.type(description="What the search text was understood to ask for (soft preferences).")
class Interpretation:
    categories: list[CategoryGuess]
    input_format: str | None
    output_format: str | None
    constraints: list[str]


@strawberry.type
class SearchPage:
    results: list[SearchResult]
    total_count: int
    page_info: PageInfo
    search_id: str | None = strawberry.field(
        description="Pass to listing(id, searchId:) or runs so the search counts as satisfied."
    )
    interpretation: Interpretation | None
    notes: list[str]

    @classmethod
    def from_response(cls, response: domain.SearchResponse) -> SearchPage:
        understood = response.interpretation
        interpretation = None
        if understood is not None:
            interpretation = Interpretation(
                categories=[
                    CategoryGuess(category=g.category, subcategory=g.subcategory, probability=g.probability)
                    for g in understood.labels
                ],
                input_format=understood.input_format,
                output_format=understood.output_format,
                constraints=understood.constraints.describe(),
            )
        return cls(
            results=[SearchResult.from_result(result) for result in response.results],
            total_count=response.total_count,
            page_info=PageInfo(has_next_page=response.has_next_page, end_cursor=response.end_cursor),
            search_id=response.search_id,
            interpretation=interpretation,
            notes=list(response.notes),
        )


@strawberry.type
class Query:
    @strawberry.field(description="Hybrid keyword + semantic search with facets and explanations.")
    async def search(self, info: strawberry.Info, input: SearchInput) -> SearchPage:
        ctx = info.context
        response = await ctx.catalog.search.search(ctx.actor, input.to_request())
        return SearchPage.from_response(response)
