"""Reviews: a rating (1-5) and a text, one per account per listing.

Adding a review to a listing one has already reviewed *replaces* the earlier review (rating and text)
instead of failing: people revise their opinion, and one voice per account keeps averages honest. An owner
cannot review their own listing. Only listings the author can see can be reviewed (others are NOT_FOUND).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.access import visible_to
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
        if not 1 <= first <= MAX_REVIEWS_PAGE:
            raise BadInput(f"first must be 1..{MAX_REVIEWS_PAGE}; got {first}", field="first")
        if offset < 0:
            raise BadInput(f"offset must be ≥ 0; got {offset}", field="offset")
        async with self.db.session() as session:
            await self._require_visible(session, actor, listing_id)
            rows = await session.execute(
                select(Review, Account.name)
                .join(Account, Account.id == Review.account_id)
                .where(Review.listing_id == listing_id)
                .order_by(Review.created_at.desc(), Review.id)
                .offset(offset)
                .limit(first)
            )
            return [self._view(review, name) for review, name in rows]

    async def summary(self, actor: Actor, listing_id: str) -> RatingSummary:
        async with self.db.session() as session:
            await self._require_visible(session, actor, listing_id)
            average, count = (
                await session.execute(
                    select(func.avg(Review.rating), func.count()).where(Review.listing_id == listing_id)
                )
            ).one()
            return RatingSummary(float(average) if average is not None else None, count)

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
    async def _require_visible(session: AsyncSession, actor: Actor, listing_id: str) -> None:
        found = await session.scalar(select(Listing.id).where(Listing.id == listing_id, visible_to(actor)))
        if found is None:
            raise NotFound(f"no listing with id {listing_id!r}")

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
