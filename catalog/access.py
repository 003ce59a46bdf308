"""Who may see and change a listing — the one place these rules are written.

Visibility: public listings are seen by everyone (anonymous included); private ones by their owner;
shared ones by their owner and the accounts named in ``listing_shares``; admins see everything. A
suspended listing (pulled after failed re-verification) is seen only by its owner and admins.
A listing an actor cannot see is reported as NOT_FOUND, never FORBIDDEN, so its existence does not leak.

Who may show a listing to others: producers publish (and admins); a requester's listing stays private
unless mlrepo wrote it for them — a model their training job made, a pipeline they published — so a
requester account cannot put a listing of its own words in front of everyone by ``createListing`` or by
widening an edit, which publishing (``publishPackage``...) refuses it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import ColumnElement, and_, exists, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.actors import Actor
from catalog.enums import Visibility
from catalog.listing_view import ListingView
from infra.tables import Listing, ListingShare

ACTIVE = "active"
SUSPENDED = "suspended"


def visible_to(actor: Actor) -> ColumnElement[bool]:
    """A WHERE clause over ``Listing`` admitting exactly the rows ``actor`` may read."""
    if actor.is_admin:
        return true()
    live = and_(Listing.status == ACTIVE, Listing.verification_status != SUSPENDED)
    public = and_(Listing.visibility == Visibility.PUBLIC.value, live)
    if actor.account_id is None:
        return public
    shared = and_(
        Listing.visibility == Visibility.SHARED.value,
        live,
        exists(
            select(ListingShare.listing_id).where(
                ListingShare.listing_id == Listing.id, ListingShare.account_id == actor.account_id
            )
        ),
    )
    return or_(public, Listing.owner_id == actor.account_id, shared)


async def visible_among(session: AsyncSession, actor: Actor, listing_ids: Sequence[str]) -> list[str]:
    """The ids among ``listing_ids`` that ``actor`` may see (``visible_to``), in one query: what the
    relations of a whole page (reviews, versions) are read for, each listing under the rule it is read
    under alone."""
    if not listing_ids:
        return []
    found = await session.scalars(
        select(Listing.id).where(Listing.id.in_(set(listing_ids)), visible_to(actor))
    )
    return list(found.all())


def may_see(
    actor: Actor,
    owner_id: str | None,
    visibility: str,
    status: str,
    verification_status: str,
    shared_with: Collection[str],
) -> bool:
    """The Python twin of ``visible_to``, for a listing already read."""
    if actor.is_admin or (actor.account_id is not None and owner_id == actor.account_id):
        return True
    if status != ACTIVE or verification_status == SUSPENDED:
        return False
    if visibility == Visibility.PUBLIC:
        return True
    return visibility == Visibility.SHARED and actor.account_id in shared_with


def can_see(actor: Actor, listing: Listing, shared_with: Collection[str]) -> bool:
    return may_see(
        actor, listing.owner_id, listing.visibility, listing.status, listing.verification_status, shared_with
    )


def can_see_view(actor: Actor, view: ListingView) -> bool:
    return may_see(
        actor, view.owner_id, view.visibility, view.status, view.verification_status, view.shared_with
    )


def can_modify(actor: Actor, listing: Listing) -> bool:
    """Only the owner or an admin changes a listing (ownerless imported listings: admins only)."""
    return actor.is_admin or (actor.account_id is not None and listing.owner_id == actor.account_id)


AUDIENCE_REFUSAL = (
    "only producer accounts publish listings others can see: give visibility PRIVATE (a requester's "
    "trained models and published pipelines may be shared or made public)"
)


def may_show_to_others(actor: Actor, written_by_platform: bool) -> bool:
    """Whether ``actor`` may give a listing a public or shared visibility (see the module docstring)."""
    return actor.is_producer or written_by_platform
