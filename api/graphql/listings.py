"""GraphQL for browsing and editing listings: ``listing``, ``listings``, ``categories``, ``me`` and the
create/update/delete/review mutations. Resolvers only translate; the catalog checks and decides."""

from __future__ import annotations

import strawberry
from strawberry import UNSET
from strawberry.scalars import JSON

from api.graphql.convert import errors_in_graphql_terms, given_fields
from api.graphql.types import Account, Listing, ListingKind, PageInfo, ResourcesInput, Review, Visibility
from catalog.enums import UsageKind
from catalog.listings import ListingFilter

# GraphQL names that differ from the catalog's listing fields (``catalog.listing_input.ListingFields``).
LISTING_INPUT_NAMES = {
    "latency_p50_ms": "latency_ms",
    "size_bytes": "size",
    "timeout_s": "timeout",
    "producer_name": "producer",
}
CATALOG_LISTING_NAMES = {catalog: graphql for graphql, catalog in LISTING_INPUT_NAMES.items()}


@strawberry.input(description="Listing fields to change; fields left out stay as they are.")
class UpdateListingInput:
    name: str | None = UNSET
    kind: ListingKind | None = UNSET
    category: str | None = UNSET
    subcategories: list[str] | None = UNSET
    description: str | None = UNSET
    documentation: str | None = UNSET
    framework: str | None = UNSET
    tags: list[str] | None = UNSET
    license: str | None = UNSET
    input_format: str | None = UNSET
    input_schema: JSON | None = UNSET
    output_format: str | None = UNSET
    output_schema: JSON | None = UNSET
    resources: ResourcesInput | None = UNSET
    training_resources: ResourcesInput | None = UNSET
    timeout_s: float | None = UNSET
    accuracy: float | None = UNSET
    accuracy_metric: str | None = UNSET
    accuracy_dataset: str | None = UNSET
    latency_p50_ms: float | None = UNSET
    latency_p95_ms: float | None = UNSET
    size_bytes: float | None = UNSET
    storage_location: str | None = UNSET
    examples: JSON | None = UNSET
    producer_name: str | None = UNSET
    visibility: Visibility | None = UNSET
    shared_with: list[str] | None = strawberry.field(
        default=UNSET, description="Account names or ids (visibility SHARED only)."
    )
    version: str | None = UNSET


@strawberry.input(description="A new listing: name, kind and category are required.")
class CreateListingInput(UpdateListingInput):
    name: str
    kind: ListingKind
    category: str


@strawberry.input
class ListingFilterInput:
    kinds: list[ListingKind] | None = None
    category: str | None = None
    subcategory: str | None = None
    owner_id: strawberry.ID | None = None
    input_format: str | None = None
    output_format: str | None = None

    def to_filter(self) -> ListingFilter:
        return ListingFilter(
            kinds=tuple(kind.value for kind in self.kinds) if self.kinds else None,
            category=self.category,
            subcategory=self.subcategory,
            owner_id=self.owner_id,
            input_format=self.input_format,
            output_format=self.output_format,
        )


@strawberry.type
class ListingEdge:
    node: Listing
    cursor: str


@strawberry.type
class ListingConnection:
    edges: list[ListingEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class SubcategoryCount:
    name: str
    count: int


@strawberry.type
class CategoryCount:
    name: str
    count: int
    subcategories: list[SubcategoryCount]


@strawberry.type
class DeletePayload:
    id: strawberry.ID
    deleted: bool


def listing_values(data: UpdateListingInput) -> dict:
    return given_fields(data, LISTING_INPUT_NAMES)


@strawberry.type
class Query:
    @strawberry.field(
        description="One listing. Pass the searchId it was found through (a search of yours, else "
        "NOT_FOUND): the view counts as a selection."
    )
    async def listing(
        self, info: strawberry.Info, id: strawberry.ID, search_id: str | None = None
    ) -> Listing:
        ctx = info.context
        view = await ctx.catalog.listings.get(ctx.actor, str(id))
        if search_id is not None:  # refused as runJob refuses it: unknown, or another account's search
            await ctx.catalog.demand.require_search(search_id, ctx.actor)
            await ctx.catalog.usage.record(
                view.id, UsageKind.VIEW.value, account_id=ctx.actor.account_id, search_id=search_id
            )
        return Listing.from_view(view)

    @strawberry.field(description="Browse listings newest first, with cursor pagination (first: 1..100).")
    async def listings(
        self,
        info: strawberry.Info,
        filter: ListingFilterInput | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> ListingConnection:
        ctx = info.context
        page = await ctx.catalog.listings.list(
            ctx.actor,
            filter.to_filter() if filter else None,
            first=first,
            after=after,
            max_page_size=ctx.settings.max_page_size,
        )
        edges = [
            ListingEdge(node=Listing.from_view(item), cursor=cursor)
            for item, cursor in zip(page.items, page.cursors, strict=True)
        ]
        return ListingConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
            total_count=page.total_count,
        )

    @strawberry.field(description="Categories the caller can see listings in, with counts.")
    async def categories(self, info: strawberry.Info) -> list[CategoryCount]:
        ctx = info.context
        return [
            CategoryCount(
                name=category.name,
                count=category.count,
                subcategories=[SubcategoryCount(name=s.name, count=s.count) for s in category.subcategories],
            )
            for category in await ctx.catalog.listings.categories(ctx.actor)
        ]

    @strawberry.field(description="The signed-in account; null for anonymous callers.")
    async def me(self, info: strawberry.Info) -> Account | None:
        ctx = info.context
        if ctx.actor.is_anonymous:
            return None
        return Account.from_info(await ctx.catalog.accounts.me(ctx.actor))


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Create a listing owned by the caller (only producers publish: a requester's is PRIVATE)."
    )
    async def create_listing(self, info: strawberry.Info, input: CreateListingInput) -> Listing:
        ctx = info.context
        with errors_in_graphql_terms(CATALOG_LISTING_NAMES):
            view = await ctx.catalog.listings.create(ctx.actor, listing_values(input))
        return Listing.from_view(view)

    @strawberry.mutation(
        description="Change a listing's metadata (owner or admin); a new version is recorded."
    )
    async def update_listing(
        self, info: strawberry.Info, id: strawberry.ID, input: UpdateListingInput
    ) -> Listing:
        ctx = info.context
        with errors_in_graphql_terms(CATALOG_LISTING_NAMES):
            view = await ctx.catalog.listings.update(ctx.actor, str(id), listing_values(input))
        return Listing.from_view(view)

    @strawberry.mutation(description="Delete a listing (owner or admin) and its index entry.")
    async def delete_listing(self, info: strawberry.Info, id: strawberry.ID) -> DeletePayload:
        ctx = info.context
        await ctx.catalog.listings.delete(ctx.actor, str(id))
        return DeletePayload(id=id, deleted=True)

    @strawberry.mutation(description="Rate (1..5) and review a listing; a second review replaces the first.")
    async def add_review(
        self, info: strawberry.Info, listing_id: strawberry.ID, rating: int, text: str = ""
    ) -> Review:
        ctx = info.context
        return Review.from_view(await ctx.catalog.reviews.add(ctx.actor, str(listing_id), rating, text))

    @strawberry.mutation(description="Withdraw a review: its author's own, or any review for an admin.")
    async def delete_review(self, info: strawberry.Info, id: strawberry.ID) -> DeletePayload:
        ctx = info.context
        await ctx.catalog.reviews.delete(ctx.actor, str(id))
        return DeletePayload(id=id, deleted=True)
