"""Loading and guarding pipelines and their steps: ownership, listing visibility, cycles, training data.

Every service in this package reads pipelines through these functions, so the access rules — a pipeline
is its owner's (admins aside), a step's listing must be visible to the caller, both answered with
NOT_FOUND otherwise — are written once.

A step whose listing its owner deleted stays in the pipeline, loaded with ``None`` for its listing
(``load_rows``). Before, the step went with the listing (a cascading foreign key): the chain silently
shrank, its neighbours met without the conditioning they needed, and a published chain ran something
else than what was published. Its owner rather sees the step marked deleted, the pipeline not runnable
with a reason naming the step, and removes or replaces it (``views.deleted_reason``). Deleting is not
refused, even under other accounts' published pipelines: a listing is its owner's to withdraw (a broken
or withdrawn model must be able to go), and a stranger's pipeline must not hold it hostage; making the
listing private is not refused either, and a deleted listing reads the same to those pipelines: their
owners read it on the step (``listingDeleted``, ``notRunnableReason``) and, for a published pipeline, in
``Pipeline.listingProblem``. A listing deleted while an edit adds it leaves a step in that same state.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.access import visible_to
from catalog.actors import Actor
from catalog.enums import ListingKind
from catalog.formats import canonical_ref
from catalog.pipelines.conditioning import needs_training
from catalog.pipelines.views import StepRole, deleted_reason, unavailable_reason
from infra.errors import BadInput, NotFound, Unauthenticated
from infra.tables import Listing, ListingVersion, Pipeline, PipelineStep

CODE_ARTIFACT_KINDS = frozenset({"package", "image"})  # versions that carry a program to run

Row = tuple[PipelineStep, Listing | None]  # None: the step's listing was deleted by its owner


def require_account(actor: Actor) -> None:
    if actor.account_id is None:
        raise Unauthenticated("pipelines belong to an account: sign in with an API token")


async def owned_pipeline(
    session: AsyncSession, actor: Actor, pipeline_id: str, *, lock: bool = False
) -> Pipeline:
    """The pipeline if ``actor`` owns it (or is an admin); NOT_FOUND otherwise, so ids do not leak.

    ``lock`` (for changes) holds the row until the transaction ends, so two concurrent edits of one
    pipeline are applied one after the other instead of interleaving their step positions. SQLite has
    no row locks, and its transaction only takes the write lock at its first write: an edit that read
    the steps first computed positions from what another edit was about to change. So on SQLite a
    no-op write of the row comes first, and the reads after it wait for the other edit to commit.
    """
    require_account(actor)
    pipeline = None
    if isinstance(pipeline_id, str):
        sqlite = session.bind.dialect.name == "sqlite"
        if lock and sqlite:
            touch = update(Pipeline).where(Pipeline.id == pipeline_id).values(updated_at=Pipeline.updated_at)
            await session.execute(touch)
        pipeline = await session.get(Pipeline, pipeline_id, with_for_update=lock and not sqlite)
    if pipeline is None or not (actor.is_admin or pipeline.owner_id == actor.account_id):
        raise NotFound(f"pipeline {pipeline_id!r} not found")
    return pipeline


async def visible_listing(
    session: AsyncSession, actor: Actor, listing_id: str, *, field: str | None = None
) -> Listing:
    """The listing if ``actor`` may see it; NOT_FOUND otherwise (naming ``field``, the argument that
    gave the id, when there is one)."""
    listing = (
        await session.execute(select(Listing).where(Listing.id == listing_id, visible_to(actor)))
    ).scalar_one_or_none()
    if listing is None:
        raise NotFound(f"listing {listing_id!r} not found", **({"field": field} if field else {}))
    return listing


async def unseen_listing_ids(session: AsyncSession, actor: Actor, rows: Sequence[Row]) -> set[str]:
    """The steps' listings ``actor`` may no longer see: a listing visible when it was added may since
    have been made private or suspended by its owner, and a pipeline must not keep showing it."""
    ids = {listing.id for _, listing in rows if listing is not None}
    if not ids or actor.is_admin:
        return set()
    seen = await session.scalars(select(Listing.id).where(Listing.id.in_(ids), visible_to(actor)))
    return ids - set(seen)


async def require_visible_steps(session: AsyncSession, actor: Actor, rows: Sequence[Row]) -> None:
    """BadInput when a step's listing is no longer visible to ``actor`` or was deleted (it must not be
    trained or copied, and its name must not be shown)."""
    unseen = await unseen_listing_ids(session, actor, rows)
    problems = [
        deleted_reason(step.position) if listing is None else unavailable_reason(step.position)
        for step, listing in rows
        if listing is None or listing.id in unseen
    ]
    if problems:
        raise BadInput("; ".join(problems))


async def load_rows(session: AsyncSession, pipeline_id: str) -> list[Row]:
    """The steps in order with their listings; ``None`` for a listing that was deleted."""
    result = await session.execute(
        select(PipelineStep, Listing)
        .outerjoin(Listing, Listing.id == PipelineStep.listing_id)
        .where(PipelineStep.pipeline_id == pipeline_id)
        .order_by(PipelineStep.position, PipelineStep.id)
    )
    return [(step, listing) for step, listing in result.all()]


async def step_row(session: AsyncSession, pipeline_id: str, step_id: str) -> tuple[PipelineStep, Listing]:
    """The step and its listing; BadInput when that listing was deleted (remove or replace the step)."""
    for step, listing in await load_rows(session, pipeline_id):
        if step.id != step_id:
            continue
        if listing is None:
            raise BadInput(deleted_reason(step.position), field="stepId")
        return step, listing
    raise NotFound(f"step {step_id!r} is not in this pipeline", field="stepId")


def check_training_data(algorithm: Listing, dataset: Listing, field: str) -> None:
    """Training data must be a labelled dataset whose declared records match what the algorithm learns
    from; ``field`` names the argument that gave the dataset in every refusal.

    Its labels are its declared output format: a dataset that declares none (texts to score, images to
    label) gives the algorithm nothing to learn, and its training failed in the worker, after queueing,
    on the first example without a target."""
    if not needs_training(algorithm):
        raise BadInput(
            f"{algorithm.name!r} runs as it is (it declares no training_resources), "
            "so it takes no training data",
            field=field,
        )
    if dataset.kind != ListingKind.DATASET:
        raise BadInput(
            f"training data must be a dataset listing; {dataset.name!r} is a {dataset.kind}", field=field
        )
    for side in ("input_format", "output_format"):
        wanted, given = getattr(algorithm, side), getattr(dataset, side)
        if wanted and given and canonical_ref(wanted) != canonical_ref(given):
            raise BadInput(
                f"dataset {dataset.name!r} has {side} {given} but {algorithm.name!r} learns from {wanted}",
                field=field,
            )
    if not dataset.output_format:
        raise BadInput(
            f"dataset {dataset.name!r} declares no labels (no output format), so {algorithm.name!r} has "
            "nothing to learn from it: training data is examples of an input and its target",
            field=field,
        )


async def source_pipeline(session: AsyncSession, listing_id: str) -> Pipeline | None:
    """The stored pipeline a pipeline listing was published from (None for imported descriptions)."""
    return (
        await session.execute(select(Pipeline).where(Pipeline.listing_id == listing_id))
    ).scalar_one_or_none()


async def carries_code(session: AsyncSession, listing_id: str) -> bool:
    """Whether the listing's latest version is a program (a code package or an image): a pipeline
    published that way runs as one step, like a model, not through stored steps."""
    kind = await session.scalar(
        select(ListingVersion.artifact_kind)
        .where(ListingVersion.listing_id == listing_id)
        .order_by(ListingVersion.created_at.desc())
        .limit(1)
    )
    return kind in CODE_ARTIFACT_KINDS


async def refuse_cycle(session: AsyncSession, pipeline: Pipeline, listing: Listing) -> None:
    """A pipeline listing may be a step only if it does not (transitively) contain this pipeline."""
    pending, seen = [listing.id], set()
    while pending:
        listing_id = pending.pop()
        if listing_id in seen:
            continue
        seen.add(listing_id)
        source = await source_pipeline(session, listing_id)
        if source is None:
            continue
        if source.id == pipeline.id:
            raise BadInput(
                f"adding {listing.name!r} would make pipeline {pipeline.name!r} contain itself",
                field="listingId",
            )
        for _, inner in await load_rows(session, source.id):
            if inner is not None and inner.kind == ListingKind.PIPELINE:
                pending.append(inner.id)


def chosen_pairs(rows: Sequence[Row]) -> set[tuple[str, str]]:
    chosen = [step.id for step, _ in rows if step.role == StepRole.STEP]
    return set(itertools.pairwise(chosen))
