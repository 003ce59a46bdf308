"""Reviews: a rating (1-5) and a text, one per account per listing.

Adding a review to a listing one has already reviewed *replaces* the earlier review (rating and text)
instead of failing: people revise their opinion, and one voice per account keeps averages honest. An owner
cannot review their own listing. Only listings the author can see can be reviewed (others are NOT_FOUND).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from catalog.access import visible_among, visible_to
from catalog.actors import Actor
from catalog.clock import as_utc
from catalog.text_checks import refuse_nul
from infra.db import Database
from infra.errors import BadInput, Forbidden, NotFound, Unauthenticated, Unavailable
from infra.tables import Account, Listing, Review, utcnow

MAX_REVIEW_CHARS = 5000
MAX_REVIEWS_PAGE = 100


@dataclass(frozen=True, slots=True)
class ReviewView:
    id: str
    listing_id: str
    account_id: str
    author_name: str
    rating: int
    text: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RatingSummary:
    average: float | None
    count: int


def check_review_page(first: int, offset: int) -> None:
    """The bounds of one page of a listing's reviews (checked per field before a page's batch is read)."""
    if not 1 <= first <= MAX_REVIEWS_PAGE:
        raise BadInput(f"first must be 1..{MAX_REVIEWS_PAGE}; got {first}", field="first")
    if offset < 0:
        raise BadInput(f"offset must be ≥ 0; got {offset}", field="offset")


def check_review(rating: int, text: str | None) -> str:
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise BadInput(f"rating: must be a whole number from 1 to 5; got {rating!r}", field="rating")
    text = (text or "").strip()
    refuse_nul("text", text)
    if len(text) > MAX_REVIEW_CHARS:
        raise BadInput(f"text: longer than {MAX_REVIEW_CHARS} characters ({len(text)})", field="text")
    return text


class ReviewService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, actor: Actor, listing_id: str, rating: int, text: str | None = "") -> ReviewView:
        """Add the actor's review of a listing, or replace their earlier one."""
        if actor.is_anonymous:
            raise Unauthenticated("sign in to review listings")
        text = check_review(rating, text)
        for _attempt in range(2):  # a concurrent first review by the same account: retry as an update
            try:
                return await self._upsert(actor, listing_id, rating, text)
            except IntegrityError:
                continue
        raise Unavailable("could not save the review; retry")  # pragma: no cover - needs two races in a row

    async def _upsert(self, actor: Actor, listing_id: str, rating: int, text: str) -> ReviewView:
        async with self.db.session() as session:
            listing = await session.scalar(select(Listing).where(Listing.id == listing_id, visible_to(actor)))
            if listing is None:
                raise NotFound(f"no listing with id {listing_id!r}")
            if listing.owner_id == actor.account_id:
                raise Forbidden("owners cannot review their own listings")
            review = await session.scalar(
                select(Review).where(Review.listing_id == listing_id, Review.account_id == actor.account_id)
            )
            if review is None:
                review = Review(listing_id=listing_id, account_id=actor.account_id, rating=rating, text=text)
                session.add(review)
            else:
                review.rating, review.text, review.created_at = rating, text, utcnow()
            await session.flush()
            author = await session.get(Account, actor.account_id)
            return self._view(review, author.name if author else "")

    async def list(self, actor: Actor, listing_id: str, first: int = 20, offset: int = 0) -> list[ReviewView]:
        """A listing's reviews, newest first; NOT_FOUND when ``actor`` may not see it."""
        pages = await self.list_many(actor, [listing_id], first, offset)
        if listing_id not in pages:
            raise NotFound(f"no listing with id {listing_id!r}")
        return pages[listing_id]

    async def list_many(
        self, actor: Actor, listing_ids: Sequence[str], first: int = 20, offset: int = 0
    ) -> dict[str, list[ReviewView]]:
        """``list`` for every listing of a page at once: two queries (which are visible, then each one's
        reviews numbered within it by a window function), not two per listing. Listings ``actor`` may
        not see are absent (``list`` answers NOT_FOUND for them)."""
        check_review_page(first, offset)
        async with self.db.session() as session:
            visible = await visible_among(session, actor, listing_ids)
            if not visible:
                return {}
            newest_first = (Review.created_at.desc(), Review.id)
            numbered = (
                select(
                    Review.id.label("review_id"),
                    Account.name.label("author_name"),
                    func.row_number()
                    .over(partition_by=Review.listing_id, order_by=newest_first)
                    .label("position"),
                )
                .join(Account, Account.id == Review.account_id)
                .where(Review.listing_id.in_(visible))
                .subquery()
            )
            rows = await session.execute(
                select(Review, numbered.c.author_name)
                .join(numbered, numbered.c.review_id == Review.id)
                .where(numbered.c.position > offset, numbered.c.position <= offset + first)
                .order_by(Review.listing_id, numbered.c.position)
            )
            pages: dict[str, list[ReviewView]] = {listing_id: [] for listing_id in visible}
            for review, name in rows:
                pages[review.listing_id].append(self._view(review, name))
            return pages

    async def summary(self, actor: Actor, listing_id: str) -> RatingSummary:
        """A listing's average rating and review count; NOT_FOUND when ``actor`` may not see it."""
        summaries = await self.summaries(actor, [listing_id])
        if listing_id not in summaries:
            raise NotFound(f"no listing with id {listing_id!r}")
        return summaries[listing_id]

    async def summaries(self, actor: Actor, listing_ids: Sequence[str]) -> dict[str, RatingSummary]:
        """``summary`` for every listing of a page in two queries; invisible listings are absent."""
        async with self.db.session() as session:
            visible = await visible_among(session, actor, listing_ids)
            if not visible:
                return {}
            rows = await session.execute(
                select(Review.listing_id, func.avg(Review.rating), func.count())
                .where(Review.listing_id.in_(visible))
                .group_by(Review.listing_id)
            )
            rated = {listing_id: (average, count) for listing_id, average, count in rows}
        summaries: dict[str, RatingSummary] = {}
        for listing_id in visible:
            average, count = rated.get(listing_id, (None, 0))
            summaries[listing_id] = RatingSummary(float(average) if average is not None else None, count)
        return summaries

    async def delete(self, actor: Actor, review_id: str) -> None:
        """Authors delete their own reviews; admins delete any."""
        if actor.is_anonymous:  # an anonymous write (README: UNAUTHENTICATED), not an unknown review
            raise Unauthenticated("sign in to delete reviews")
        async with self.db.session() as session:
            review = await session.get(Review, review_id)
            if review is None or (review.account_id != actor.account_id and not actor.is_admin):
                raise NotFound(f"no review with id {review_id!r}")
            await session.delete(review)

    @staticmethod
    def _view(review: Review, author_name: str) -> ReviewView:
        return ReviewView(
            id=review.id,
            listing_id=review.listing_id,
            account_id=review.account_id,
            author_name=author_name,
            rating=review.rating,
            text=review.text,
            created_at=as_utc(review.created_at),
        )
