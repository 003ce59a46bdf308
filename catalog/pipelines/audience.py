"""Whoever a pipeline listing is published to must be able to run every step of it.

A pipeline listing runs its stored steps for whoever runs it, each as that caller
(``PipelineService.plan_listing_run``): a step whose listing the caller may not see fails their run. The
usual case is a trained model, which training leaves private to its trainer and which may even have to
stay private (``catalog.provenance``: a model trained from another producer's algorithm is as shareable
as that producer allows). A public pipeline listing with such a step was accepted although nobody but
its owner could run it; publishing it, or widening its audience later, is refused instead, naming the
step and what would make it reachable.

The same rule holds for as long as the listing is published (``keep_published_reachable``): adding,
removing or retraining a step of a published pipeline changes what its listing runs, so a change that
would leave a step out of the listing's reach — a private model added, a conditioner only its owner may
see placed by reconnection, training data changed (which drops the trained model) or a model trained
after publication (training leaves it private) — is refused with BAD_INPUT naming the step and the fix,
in the same transaction, so the published chain stays as it was. Refusing rather than editing a draft:
a producer who published a chain has promised it to its audience and expects it never to break under
them, and to learn so at the edit, before a training job spends their quota, not from their users.
A draft would need a second copy of the steps, an operation that swaps it in, and a rule for which copy
the listing runs meanwhile; none exists here (a pipeline is published once, ``publish_pipeline``), and a
draft whose training silently never reached the listing would surprise more than a refusal. A producer
who wants to rework the chain makes its listing private first (or builds a new pipeline) and widens it
again once every step reaches the audience, which this same rule then checks.

What a step's owner does to their own listing later (making it private, deleting it or a trained model)
is theirs to do; it is not refused here, but a pipeline's ``notRunnableReason`` and its owner's
``listingProblem`` (``audience_problem``) say what the listing's audience can no longer run.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.enums import Visibility
from catalog.indexing import shares_of
from catalog.pipelines.conditioning import needs_training
from catalog.pipelines.store import load_rows, source_pipeline
from catalog.provenance import PRIVATE_ONLY, REDISTRIBUTION_KEY, TRAINED_MODELS_KEY
from catalog.versions import latest_published_version
from infra.errors import BadInput
from infra.tables import Listing, Pipeline


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
    session: AsyncSession,
    pipeline_id: str,
    visibility: str,
    audience: Sequence[str] = (),
    *,
    listing_name: str | None = None,
    only: Collection[str] | None = None,
) -> None:
    """BadInput naming the first step of the stored pipeline that a pipeline listing of ``visibility``,
    shared with the ``audience`` account ids, would not reach: its listing or, for a trained step, its
    trained model is out of the audience's sight (a run checks both: ``build_view``), its trained model
    was deleted, or it still awaits training (training leaves the model private). A nested pipeline
    listing is a step like any other: its own publication was checked.

    ``listing_name``: the listing already published from the pipeline, when a change of the pipeline is
    checked (``keep_published_reachable``); the fix offered is then to make that listing private first,
    not to publish the pipeline as private, and ``only`` the step ids it touched are judged: a step its
    owner withdrew since publication must not block the edits that remove it, one after another."""
    if visibility == Visibility.PRIVATE:
        return
    owner_id = await session.scalar(select(Pipeline.owner_id).where(Pipeline.id == pipeline_id))
    rows = await load_rows(session, pipeline_id)
    trained_ids = [step.trained_listing_id for step, _ in rows if step.trained_listing_id is not None]
    trained: dict[str, Listing] = {}
    if trained_ids:
        found = await session.scalars(select(Listing).where(Listing.id.in_(trained_ids)))
        trained = {listing.id: listing for listing in found}
    runs = [
        (step, listing, trained.get(step.trained_listing_id) if step.trained_listing_id else listing)
        for step, listing in rows
        if only is None or step.id in only
    ]
    needed = [r for _, listing, running in runs for r in (listing, running) if r is not None]
    shares = await shares_of(session, [r.id for r in needed if r.visibility == Visibility.SHARED])
    # Publishing or widening the listing is refused for its visibility; a change of the steps for itself.
    details, prefix = ({}, "") if listing_name is not None else ({"field": "visibility"}, "visibility: ")
    if listing_name is None:
        whom, fallback = f"this {visibility} pipeline listing", "or publish the pipeline as private"
    else:
        whom = f"the {visibility} listing {listing_name!r} published from this pipeline"
        fallback = f"or make {listing_name!r} private first (updateListing)"
    for step, listing, running in runs:
        label = f"step {step.position + 1}"
        if listing is None:
            raise BadInput(
                f"{prefix}{label}: its listing was deleted, so nobody {whom} reaches could run it; "
                f"remove or replace that step, {fallback}",
                **details,
            )
        # A listing its owner withdrew from the publisher is not named to them (``build_view`` neither).
        named = (
            f"{label} {listing.name!r}" if seen_by(listing, shares.get(listing.id, ()), owner_id) else label
        )
        if running is None or (step.trained_listing_id is None and needs_training(listing)):
            what = "its trained model was deleted" if step.trained_listing_id else "it is not trained"
            raise BadInput(
                f"{prefix}{named}: {what}, so nobody {whom} reaches could run it; training leaves "
                f"the model it produces private: train it while the listing is private, then make the "
                f"new model {visibility}",
                **details,
            )
        for target in (listing, running) if running.id != listing.id else (listing,):
            if reaches(target, shares.get(target.id, ()), visibility, audience):
                continue
            where = named
            if target is not listing:
                seen = seen_by(target, shares.get(target.id, ()), owner_id)
                where += f" runs its trained model {target.name!r}, which" if seen else " runs a model that"
            if target.owner_id == owner_id:
                remedy = await _remedy(session, target, visibility, fallback)
            else:  # not the publisher's to open up
                remedy = f"its owner is another account: remove or replace that step, {fallback}"
            raise BadInput(
                f"{prefix}{where} is {target.visibility}, so nobody {whom} reaches could run it; " + remedy,
                **details,
            )


def seen_by(listing: Listing, listing_shares: Sequence[str], account_id: str | None) -> bool:
    """Whether the pipeline's owner may see ``listing`` (and so read its name in an error)."""
    return (
        listing.visibility == Visibility.PUBLIC
        or listing.owner_id == account_id
        or (listing.visibility == Visibility.SHARED and account_id in listing_shares)
    )


async def _remedy(session: AsyncSession, listing: Listing, visibility: str, fallback: str) -> str:
    """What makes the publisher's own ``listing`` reach the audience, unless it must stay private."""
    version = await latest_published_version(session, listing.id)
    manifest = (version.manifest if version is not None else None) or {}
    if manifest.get(REDISTRIBUTION_KEY) == PRIVATE_ONLY:
        return (
            "that model was trained from another producer's algorithm "
            f"({manifest.get('trained_from')}), whose producer keeps models trained from it private "
            f"(its manifest's {TRAINED_MODELS_KEY!r}), so a pipeline that runs it can only be private"
        )
    return f"make {listing.name!r} {visibility} first (or share it with the same accounts), {fallback}"


async def refuse_unreachable_listing(
    session: AsyncSession, listing_id: str, visibility: str, audience: Sequence[str] = ()
) -> None:
    """``refuse_unreachable_steps`` for the stored pipeline behind a pipeline listing (if any)."""
    source = await source_pipeline(session, listing_id)
    if source is not None:
        await refuse_unreachable_steps(session, source.id, visibility, audience)


async def keep_published_reachable(
    session: AsyncSession, pipeline: Pipeline, step_ids: Collection[str] | None = None
) -> None:
    """After a change of ``pipeline``'s steps (in the change's own transaction): BadInput, which rolls
    the change back, when the listing published from it would not reach its audience with one of the
    ``step_ids`` the change added or altered (None: every step). An unpublished pipeline (or one whose
    listing was deleted) may change freely."""
    if pipeline.listing_id is None or (step_ids is not None and not step_ids):
        return
    listing = await session.get(Listing, pipeline.listing_id)
    if listing is None:
        return
    audience = (await shares_of(session, [listing.id])).get(listing.id, [])
    await refuse_unreachable_steps(
        session, pipeline.id, listing.visibility, audience, listing_name=listing.name, only=step_ids
    )


async def audience_problem(session: AsyncSession, pipeline: Pipeline) -> str | None:
    """Why some of those the pipeline's listing is published to cannot run it now (a step's owner made
    it private or deleted a trained model since); None when all can or it is not published."""
    try:
        await keep_published_reachable(session, pipeline)
    except BadInput as exc:
        return exc.message
    return None
