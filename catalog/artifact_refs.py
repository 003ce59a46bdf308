"""Which stored artifacts an account may name in the fields it writes on a listing.

The garbage collection keeps every blob whose digest a listing names, in ``storage_location``
(``artifact:<digest>``, how a trained model points at its package) or anywhere in ``extra``
(``catalog.artifact_gc``). A digest typed into ``createListing`` / ``updateListing`` therefore pinned that
blob for as long as the listing lived — any blob, another account's included, and whether or not the
caller had ever seen it. A caller may now name only an artifact already theirs to reference: the package
of a version of a listing they own (what publishing or training wrote for it), an artifact one of their
listings already names, or the upload of one of their publications. Anything else is ``BAD_INPUT`` naming
the field. Admins may name any artifact; a value the listing already holds may be kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.actors import Actor
from infra.errors import BadInput
from infra.tables import Listing, ListingVersion, Publication

ARTIFACT_SCHEME = "artifact:"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.IGNORECASE)
# The listing fields the garbage collection reads digests from, as ``Listing`` columns.
REFERENCING_COLUMNS = ("storage_location", "extra")


def digests_named(values: Mapping[str, Any]) -> dict[str, set[str]]:
    """The digests (lower-cased) each referencing column of ``values`` names, by column."""
    named: dict[str, set[str]] = {}
    for column in REFERENCING_COLUMNS:
        value = values.get(column)
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        found = {d.lower() for d in DIGEST.findall(text)}
        if found:
            named[column] = found
    return named


def every_digest(values: Mapping[str, Any]) -> set[str]:
    """All digests the referencing columns of ``values`` name."""
    return set().union(*digests_named(values).values())


async def refuse_foreign_artifacts(
    session: AsyncSession, actor: Actor, values: Mapping[str, Any], kept: Collection[str] = ()
) -> None:
    """``BadInput`` when ``values`` (listing columns being written) name an artifact ``actor`` may not
    reference; ``kept`` are digests the listing already names (an update may keep them)."""
    named = digests_named(values)
    wanted = every_digest(values) - set(kept)
    if not wanted or actor.is_admin:
        return
    allowed = await _referenceable(session, actor, wanted)
    for column, digests in named.items():
        foreign = sorted(digests - allowed - set(kept))
        if foreign:
            raise BadInput(
                f"{column}: {foreign[0]} is not an artifact of yours to reference (only the package of a "
                "version of a listing you own, or the upload of one of your publications)",
                field=column,
            )


async def _referenceable(session: AsyncSession, actor: Actor, digests: set[str]) -> set[str]:
    """Those of ``digests`` that ``actor`` already references through rows of their own."""
    owned = select(Listing.id).where(Listing.owner_id == actor.account_id)
    versions = await session.scalars(
        select(ListingVersion.artifact_digest).where(
            ListingVersion.listing_id.in_(owned), ListingVersion.artifact_digest.in_(digests)
        )
    )
    uploads = await session.scalars(
        select(Publication.artifact_digest).where(
            Publication.owner_id == actor.account_id, Publication.artifact_digest.in_(digests)
        )
    )
    locations = await session.scalars(
        select(Listing.storage_location).where(
            Listing.owner_id == actor.account_id,
            or_(*(Listing.storage_location == ARTIFACT_SCHEME + d for d in digests)),
        )
    )
    found = {d for d in [*versions, *uploads] if d}
    found |= {loc.removeprefix(ARTIFACT_SCHEME) for loc in locations if loc}
    return found & digests
