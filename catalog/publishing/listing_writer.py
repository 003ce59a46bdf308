"""Write a published version: the listing row, its complete version row and its index entry, atomically.

Why not ``ListingService.create``/``update`` followed by a second write: those add a metadata-only
version row, and completing it in a second transaction would leave a window where a listing is
searchable with a version that has no artifact (or an unverified status). Here everything a publish
changes is one ``ListingIndex.atomic`` transaction, built from the listing service's own validation
helpers (``prepare``, ``check_io``, ``check_kind_rules``), so the rules stay in one place.

Also here: finding the listing a publication targets, with the owner rule (only the listing's owner —
or an admin — adds versions; anyone else gets FORBIDDEN), the kind rule (a new version keeps the
listing's kind) and the version rule (versions are immutable and only go up: an existing version number,
or one not after the listing's current version, is a CONFLICT; no number means the next patch version).
A manifest's ``visibility`` chooses a new listing's audience; a new version keeps its listing's (changing
an audience is ``updateListing``'s, with its rules), so a manifest saying otherwise is a CONFLICT here,
in the package step, rather than a listing silently left as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.actors import Actor
from catalog.listing_input import check_version_newer, parse_listing, parse_listing_patch
from catalog.listings import (
    EMBEDDED_FIELDS,
    ListingService,
    check_io,
    check_kind_kept,
    check_kind_rules,
    require_modifiable,
)
from infra.errors import Conflict, NotFound
from infra.tables import Listing, ListingVersion, utcnow

NOT_OWNER = "only the listing's owner may publish a new version of it"


@dataclass(frozen=True)
class Target:
    listing_id: str | None  # None: a new listing
    version: str
    previous_version: str | None


def next_patch(version: str) -> str:
    core = version.split("-", 1)[0].split("+", 1)[0]
    parts = core.split(".")
    try:
        major, minor, patch = (int(p) for p in parts[:3])
    except ValueError:
        return "1.0.0"
    return f"{major}.{minor}.{patch + 1}"


async def resolve_target(
    listings: ListingService,
    actor: Actor,
    name: str,
    kind: str,
    listing_id: str | None,
    version: str | None,
    visibility: str | None = None,
) -> Target:
    """Which listing this publication adds a version to, and which version number it gets.

    A new version keeps the listing's kind: a dataset that became a model would break the trainings,
    pipelines and reviews that name it as a dataset."""
    async with listings.db.session() as session:
        if listing_id is not None:
            row = await require_modifiable(
                session, actor, await session.get(Listing, listing_id), listing_id, NOT_OWNER
            )
        else:
            row = await session.scalar(
                select(Listing).where(Listing.owner_id == actor.account_id, Listing.name == name)
            )
        if row is None:
            return Target(None, version or "1.0.0", None)
        if row.kind != kind and listing_id is None:
            raise Conflict(
                f"you already have a {row.kind} listing named {row.name!r}; publish this {kind} under "
                "another name",
                field="name",
            )
        check_kind_kept(row, kind)
        _check_visibility_kept(row, visibility)
        await _check_rename(session, row, name)
        existing = set(
            (
                await session.scalars(
                    select(ListingVersion.version).where(ListingVersion.listing_id == row.id)
                )
            ).all()
        )
        chosen = version or next_patch(row.version)
        while version is None and chosen in existing:
            chosen = next_patch(chosen)
        if chosen in existing:
            raise Conflict(
                f"version {chosen} of listing {row.name!r} already exists; published versions are immutable",
                field="version",
            )
        check_version_newer(chosen, row.version)
        return Target(row.id, chosen, row.version)


def _check_visibility_kept(row: Listing, visibility: str | None) -> None:
    if visibility is not None and visibility != row.visibility:
        raise Conflict(
            f"the manifest's visibility {visibility!r} is for a new listing; listing {row.name!r} is "
            f"{row.visibility} and a new version keeps that: change it with updateListing, or drop "
            "visibility from the manifest",
            field="visibility",
        )


async def _check_rename(session: AsyncSession, row: Listing, name: str) -> None:
    """A new version may rename its listing, but not onto another listing of the same owner: found only
    when the listing was written, that failed the publication at its last step, after the image was
    built and pushed, as 'version X already exists for this listing (or the name is taken)'."""
    if name == row.name:
        return
    taken = await session.scalar(
        select(Listing.id).where(Listing.owner_id == row.owner_id, Listing.name == name, Listing.id != row.id)
    )
    if taken is not None:
        raise Conflict(
            f"cannot rename listing {row.name!r} to {name!r}: its owner has another listing named "
            f"{name!r} ({taken})",
            field="name",
        )


async def write_version(
    listings: ListingService,
    actor: Actor,
    target: Target,
    fields: dict[str, Any],
    version_values: dict[str, Any],
    system_values: dict[str, Any],
    first: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> str:
    """Create or update the listing and add its complete version row; returns the listing id.

    ``first(session)`` runs first in the same transaction, which it may abort by raising (the publish
    job's check that its run still holds the publication: ``infra.fencing``)."""
    data = {**fields, "version": target.version}
    if target.listing_id is None:
        prepared = await listings.prepare(actor.account_id, [parse_listing(data)])
        item = prepared[0]
        if isinstance(item, Exception):
            raise item
        row = item.row
        for column, value in system_values.items():
            setattr(row, column, value)
        await listings.index.embed([row])
        try:
            async with listings.index.atomic() as (session, changes):
                if first is not None:
                    await first(session)
                session.add(row)
                await session.flush()
                session.add(ListingVersion(listing_id=row.id, version=target.version, **version_values))
                changes.put(row)
        except IntegrityError:
            raise Conflict(
                f"a listing named {row.name!r} already exists for this owner", field="name"
            ) from None
        return row.id

    data.pop("visibility", None)  # a new version keeps its listing's audience (``resolve_target``)
    values = parse_listing_patch(data).columns()
    check_io(values)
    check_kind_rules(values["kind"], values)
    vector_row = Listing(**{c: values.get(c) for c in EMBEDDED_FIELDS})
    await listings.index.embed([vector_row])
    try:
        async with listings.index.atomic() as (session, changes):
            if first is not None:
                await first(session)
            row = await session.get(Listing, target.listing_id, with_for_update=not listings.db.is_sqlite)
            if row is None:
                raise NotFound(f"listing {target.listing_id} was deleted while publishing")
            await require_modifiable(session, actor, row, target.listing_id, NOT_OWNER)
            for column, value in {**values, **system_values}.items():
                setattr(row, column, value)
            row.embedding, row.embedding_model = vector_row.embedding, vector_row.embedding_model
            row.updated_at = utcnow()
            session.add(ListingVersion(listing_id=row.id, version=target.version, **version_values))
            changes.put(row)
    except IntegrityError:
        raise Conflict(
            f"version {target.version} already exists for this listing (or the name is taken)",
            field="version",
        ) from None
    return target.listing_id
