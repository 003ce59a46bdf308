"""Whoever a pipeline listing is published to must be able to run every step of it.

A pipeline listing runs its stored steps for whoever runs it, each as that caller
(``PipelineService.plan_listing_run``): a step whose listing the caller may not see fails their run. The
usual case is a trained model, which training leaves private to its trainer and which may even have to
stay private (``catalog.provenance``: a model trained from another producer's algorithm is as shareable
as that producer allows). A public pipeline listing with such a step was accepted although nobody but
its owner could run it; publishing it, or widening its audience later, is refused instead, naming the
step and what would make it reachable.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.enums import Visibility
from catalog.indexing import shares_of
from catalog.pipelines.store import load_rows, source_pipeline
from catalog.provenance import PRIVATE_ONLY, REDISTRIBUTION_KEY, TRAINED_MODELS_KEY
from catalog.versions import latest_published_version
from infra.errors import BadInput
from infra.tables import Listing


def reaches(
    listing: Listing, listing_shares: Sequence[str], visibility: str, audience: Sequence[str]
) -> bool:
    """Whether everyone a listing of ``visibility`` (shared with ``audience``) reaches may see ``listing``."""
    if listing.visibility == Visibility.PUBLIC or visibility == Visibility.PRIVATE:
        return True
    if visibility == Visibility.PUBLIC:
        return False
    readers = {listing.owner_id, *(listing_shares if listing.visibility == Visibility.SHARED else ())}
    return set(audience) <= readers


async def refuse_unreachable_steps(
    session: AsyncSession, pipeline_id: str, visibility: str, audience: Sequence[str] = ()
) -> None:
    """BadInput naming the first step of the stored pipeline whose listing (its trained model for a
    trained step) a pipeline listing of ``visibility``, shared with the ``audience`` account ids, would
    not reach. A nested pipeline listing is a step like any other: its own publication was checked."""
    if visibility == Visibility.PRIVATE:
        return
    rows = await load_rows(session, pipeline_id)
    trained_ids = [step.trained_listing_id for step, _ in rows if step.trained_listing_id is not None]
    trained: dict[str, Listing] = {}
    if trained_ids:
        found = await session.scalars(select(Listing).where(Listing.id.in_(trained_ids)))
        trained = {listing.id: listing for listing in found}
    runs = [
        (step, listing, trained.get(step.trained_listing_id) if step.trained_listing_id else listing)
        for step, listing in rows
    ]
    shared = [r.id for _, _, r in runs if r is not None and r.visibility == Visibility.SHARED]
    shares = await shares_of(session, shared)
    for step, listing, running in runs:
        if running is None or reaches(running, shares.get(running.id, ()), visibility, audience):
            continue
        where = f"step {step.position + 1} {listing.name!r}"
        if running.id != listing.id:
            where += f" runs its trained model {running.name!r}, which"
        version = await latest_published_version(session, running.id)
        manifest = (version.manifest if version is not None else None) or {}
        if manifest.get(REDISTRIBUTION_KEY) == PRIVATE_ONLY:
            remedy = (
                "that model was trained from another producer's algorithm "
                f"({manifest.get('trained_from')}), whose producer keeps models trained from it private "
                f"(its manifest's {TRAINED_MODELS_KEY!r}), so a pipeline that runs it can only be private"
            )
        else:
            remedy = (
                f"make {running.name!r} {visibility} first (or share it with the same accounts), "
                "or publish the pipeline as private"
            )
        raise BadInput(
            f"visibility: {where} is {running.visibility}, so nobody this {visibility} pipeline listing "
            f"reaches could run it; {remedy}",
            field="visibility",
        )


async def refuse_unreachable_listing(
    session: AsyncSession, listing_id: str, visibility: str, audience: Sequence[str] = ()
) -> None:
    """``refuse_unreachable_steps`` for the stored pipeline behind a pipeline listing (if any)."""
    source = await source_pipeline(session, listing_id)
    if source is not None:
        await refuse_unreachable_steps(session, source.id, visibility, audience)
