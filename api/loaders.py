"""Per-request loaders of a listing's relations (reviews, rating, version history), so that a page of
listings reads each relation in one query for the whole page instead of one query per listing.

Why: ``listings`` and ``search`` pages selecting ``reviews`` or ``versions`` ran two or three statements
per listing per relation (~7 a listing with all of them: 702 statements, 0.7 s for a page of 100 on a
small SQLite catalog; ``python -m benchmarks.listing_relations``). A resolver asks its loader for one
listing; strawberry's ``DataLoader`` gathers the keys every resolver of the page asked for in the same
turn of the event loop and the catalog reads them at once (``ReviewService.list_many``, ``summaries``,
``ListingService.versions_many``), under the same visibility rule as a single read: a listing the actor
may not see gets the NOT_FOUND it got alone.

The loaders belong to one actor (``Context.loaders`` makes new ones when the actor changes, as on a
websocket) and cache nothing: a websocket's context lives across operations, and a cached review list
would outlive the review it shows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from strawberry.dataloader import DataLoader

from catalog.actors import Actor
from catalog.reviews import RatingSummary, ReviewView, check_review_page
from infra.errors import NotFound

if TYPE_CHECKING:
    from catalog.app import CatalogApp
    from infra.tables import ListingVersion

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True)
class ReviewPage:
    """One listing's reviews as ``Listing.reviews(first, offset)`` asks for them."""

    listing_id: str
    first: int
    offset: int


def answers(found: dict[str, T], listing_ids: Sequence[str]) -> list[T | BaseException]:
    """What a batch read answers for each id: its value, or for a listing the catalog left out (the actor
    may not see it) the NOT_FOUND its single read raises."""
    return [found.get(i, NotFound(f"no listing with id {i!r}")) for i in listing_ids]


def _keyed(
    read: Callable[[list[str]], Awaitable[dict[str, T]]],
) -> Callable[[list[str]], Awaitable[Sequence[T | BaseException]]]:
    """A ``DataLoader`` batch function over listing ids from a catalog read of many listings."""

    async def load(listing_ids: list[str]) -> list[T | BaseException]:
        return answers(await read(list(dict.fromkeys(listing_ids))), listing_ids)

    return load


@dataclass
class ListingLoaders:
    actor: Actor
    reviews: DataLoader[ReviewPage, list[ReviewView]]
    rating: DataLoader[str, RatingSummary]
    versions: DataLoader[str, list[ListingVersion]]

    @classmethod
    def of(cls, catalog: CatalogApp, actor: Actor) -> ListingLoaders:
        async def reviews(pages: list[ReviewPage]) -> list[list[ReviewView] | BaseException]:
            # One read per window: a query asks for one (first, offset), or a few with aliases.
            loaded: dict[ReviewPage, list[ReviewView] | BaseException] = {}
            for first, offset in dict.fromkeys((p.first, p.offset) for p in pages):
                ids = list(
                    dict.fromkeys(p.listing_id for p in pages if (p.first, p.offset) == (first, offset))
                )
                found = await catalog.reviews.list_many(actor, ids, first, offset)
                loaded.update(
                    zip((ReviewPage(i, first, offset) for i in ids), answers(found, ids), strict=True)
                )
            return [loaded[page] for page in pages]

        return cls(
            actor=actor,
            reviews=DataLoader(reviews, cache=False),
            rating=DataLoader(_keyed(lambda ids: catalog.reviews.summaries(actor, ids)), cache=False),
            versions=DataLoader(_keyed(lambda ids: catalog.listings.versions_many(actor, ids)), cache=False),
        )

    async def review_page(self, listing_id: str, first: int, offset: int) -> list[ReviewView]:
        check_review_page(first, offset)  # the field's own error, not one for the whole batch
        return await self.reviews.load(ReviewPage(listing_id, first, offset))
