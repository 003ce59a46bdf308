"""The version a listing runs: the latest one that carries an artifact (a package, image or dataset).

An edit's version row copies that artifact (``catalog.listings.metadata_version``); a listing made from
fields alone has only bare ``metadata`` rows, which carry nothing to run.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.tables import ListingVersion

# Versions whose artifact is a program: its formats and schemas are those of the code that was tested,
# verified and signed, so only a new version of the code changes them (``catalog.listings``).
RUNS_CODE = frozenset({"package", "image", "notebook"})


async def latest_published_version(session: AsyncSession, listing_id: str) -> ListingVersion | None:
    return await session.scalar(
        select(ListingVersion)
        .where(ListingVersion.listing_id == listing_id, ListingVersion.artifact_kind != "metadata")
        .order_by(ListingVersion.created_at.desc())
        .limit(1)
    )
