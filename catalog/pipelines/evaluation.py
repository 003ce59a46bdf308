"""Judging a pipeline as it stands: each step's view and the verdict on every connection.

Read-only: this is what ``Query.pipeline`` shows. A connection is judged between consecutive chosen
steps, through whatever conditioning steps sit between them; an open one carries the reason and the
visible conditioners that could close it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.access import visible_to
from catalog.actors import Actor
from catalog.clock import as_utc
from catalog.enums import ListingKind
from catalog.pipelines.audience import audience_problem
from catalog.pipelines.conditioning import (
    MAX_ALTERNATIVES,
    as_alternative,
    chain_misfits,
    describe_gap,
    find_conditioners,
    needs_training,
)
from catalog.pipelines.runnability import MAX_NESTING, code_problem, latest_versions
from catalog.pipelines.store import CODE_ARTIFACT_KINDS, Row, load_rows, source_pipeline, unseen_listing_ids
from catalog.pipelines.views import (
    DELETED_LISTING_NAME,
    UNAVAILABLE_LISTING_NAME,
    ConnectionStatus,
    ConnectionView,
    PipelineView,
    StepRole,
    StepView,
    step_label,
    trained_deleted_reason,
    trained_unavailable_reason,
)
from infra.tables import Listing, Pipeline, PipelineStep


async def build_view(session: AsyncSession, actor: Actor, pipeline: Pipeline, depth: int = 0) -> PipelineView:
    """``depth``: how many pipeline listings this one is nested in (a nested one is judged in full,
    since a run expands it into its steps)."""
    rows = await load_rows(session, pipeline.id)
    unseen = await unseen_listing_ids(session, actor, rows)
    steps = tuple(
        step_view(step, listing, listing is not None and listing.id not in unseen) for step, listing in rows
    )
    problems = await code_problems(session, actor, rows, steps, depth)
    steps = tuple(replace(view, code_problem=problems.get(view.id)) for view in steps)
    connections = []
    chosen = [i for i, (step, _) in enumerate(rows) if step.role == StepRole.STEP]
    for i, j in itertools.pairwise(chosen):
        hidden = [view for view in steps[i : j + 1] if not view.available]
        if hidden:
            connections.append(unavailable_connection(steps[i], steps[i + 1 : j], steps[j], hidden))
        else:
            connections.append(await connection_view(session, actor, rows[i], rows[i + 1 : j], rows[j]))
    owner_view = depth == 0 and (actor.is_admin or actor.account_id == pipeline.owner_id)
    return PipelineView(
        id=pipeline.id,
        owner_id=pipeline.owner_id,
        name=pipeline.name,
        description=pipeline.description,
        listing_id=pipeline.listing_id,
        steps=steps,
        connections=tuple(connections),
        created_at=as_utc(pipeline.created_at),
        updated_at=as_utc(pipeline.updated_at),
        listing_problem=await audience_problem(session, pipeline) if owner_view else None,
    )


async def code_problems(
    session: AsyncSession, actor: Actor, rows: Sequence[Row], steps: Sequence[StepView], depth: int
) -> dict[str, str]:
    """Step id -> why the listing that runs there cannot score records, for the steps that are
    otherwise ready (visible, trained where training is needed). What runs is the trained model for a
    trained step, a nested pipeline listing's own steps unless it was published as one program, else
    the step's listing; a run plan expands the steps the same way (``PipelineService.plan_run``)."""
    ready = [(step, listing) for (step, listing), view in zip(rows, steps, strict=True) if view.runnable]
    trained_ids = [step.trained_listing_id for step, _ in ready if step.trained_listing_id is not None]
    trained: dict[str, Listing] = {}
    if trained_ids:
        found = await session.scalars(select(Listing).where(Listing.id.in_(trained_ids), visible_to(actor)))
        trained = {listing.id: listing for listing in found}
    runs = {
        step.id: trained.get(step.trained_listing_id) if step.trained_listing_id else listing
        for step, listing in ready
    }
    hidden = set(trained_ids) - set(trained)
    existing = (
        set(await session.scalars(select(Listing.id).where(Listing.id.in_(hidden)))) if hidden else set()
    )
    versions = await latest_versions(session, [r.id for r in runs.values() if r is not None])
    problems: dict[str, str] = {}
    for step, _ in ready:
        listing = runs[step.id]
        if listing is None:
            gone = step.trained_listing_id not in existing
            problems[step.id] = (trained_deleted_reason if gone else trained_unavailable_reason)(
                step.position
            )
            continue
        label = step_label(step.position, listing.name)
        version = versions.get(listing.id)
        carries_code = version is not None and version.artifact_kind in CODE_ARTIFACT_KINDS
        if listing.kind == ListingKind.PIPELINE and not carries_code:
            problem = await nested_problem(session, actor, listing, f"step {step.position + 1}", depth)
        else:
            problem = code_problem(label, version)
        if problem is not None:
            problems[step.id] = problem
    return problems


async def nested_problem(
    session: AsyncSession, actor: Actor, listing: Listing, where: str, depth: int
) -> str | None:
    """Why a pipeline listing used as a step (``where``: "step 2") cannot run: the verdict on its
    stored pipeline, which a run expands into its steps."""
    what = f"{where}: pipeline listing {listing.name!r}"
    if depth >= MAX_NESTING:
        return f"{what} nests pipelines deeper than {MAX_NESTING} levels"
    source = await source_pipeline(session, listing.id)
    if source is None:
        return f"{what} has no stored steps to run"
    inner = await build_view(session, actor, source, depth + 1)
    if not inner.steps:
        return f"{what} has no steps"
    reasons = [f"open connection: {c.reason}" for c in inner.open_connections]
    reasons += [s.not_runnable_reason or "" for s in inner.steps if not s.runnable]
    return f"{what} cannot run ({'; '.join(reasons)})" if reasons else None


def step_view(step: PipelineStep, listing: Listing | None, available: bool = True) -> StepView:
    """The step as its viewer may see it; a deleted listing (``None``) shows only its former id."""
    if listing is None:
        return deleted_step_view(step)
    view = StepView(
        id=step.id,
        position=step.position,
        role=step.role,
        listing_id=listing.id,
        listing_name=listing.name,
        kind=listing.kind,
        input_format=listing.input_format,
        output_format=listing.output_format,
        resources=listing.resources,
        needs_training=needs_training(listing),
        training_data_listing_id=step.training_data_listing_id,
        trained_listing_id=step.trained_listing_id,
    )
    if available:
        return view
    return replace(
        view,
        listing_name=UNAVAILABLE_LISTING_NAME,
        input_format=None,
        output_format=None,
        resources=None,
        needs_training=False,
        available=False,
    )


def deleted_step_view(step: PipelineStep) -> StepView:
    return StepView(
        id=step.id,
        position=step.position,
        role=step.role,
        listing_id=step.listing_id,
        listing_name=DELETED_LISTING_NAME,
        kind="",
        input_format=None,
        output_format=None,
        resources=None,
        needs_training=False,
        training_data_listing_id=step.training_data_listing_id,
        trained_listing_id=step.trained_listing_id,
        available=False,
        listing_deleted=True,
    )


def unavailable_connection(
    producer: StepView, between: Sequence[StepView], consumer: StepView, hidden: Sequence[StepView]
) -> ConnectionView:
    """A connection through a step the viewer may no longer see is open, and says nothing of that
    listing (not even its formats: they are part of what its owner withdrew)."""
    return ConnectionView(
        from_step_id=producer.id,
        to_step_id=consumer.id,
        status=ConnectionStatus.OPEN,
        output_format=producer.output_format,
        input_format=consumer.input_format,
        conditioning_step_ids=tuple(step.id for step in between),
        reason="it goes through "
        + "; ".join(
            f"step {step.position + 1}, whose listing "
            + ("was deleted" if step.listing_deleted else "is no longer available to you")
            for step in hidden
        ),
    )


async def connection_view(
    session: AsyncSession, actor: Actor, producer: Row, between: Sequence[Row], consumer: Row
) -> ConnectionView:
    a, b = producer[1], consumer[1]
    base = {
        "from_step_id": producer[0].id,
        "to_step_id": consumer[0].id,
        "output_format": a.output_format,
        "input_format": b.input_format,
    }
    if not between and chain_misfits([a, b]):
        candidates = await find_conditioners(session, actor, a, b)
        alternatives = tuple(as_alternative(c) for c in candidates[:MAX_ALTERNATIVES])
        if candidates:
            reason = (
                f"{a.name!r} emits {a.output_format} but {b.name!r} needs {b.input_format}; "
                f"add one of the proposed conditioning steps"
            )
        else:
            reason = describe_gap(a, b, chain_misfits([a, b]))
        return ConnectionView(
            status=ConnectionStatus.OPEN,
            conditioning_step_ids=(),
            reason=reason,
            alternatives=alternatives,
            **base,
        )
    if not between:
        return ConnectionView(status=ConnectionStatus.OK, conditioning_step_ids=(), reason="", **base)
    ids = tuple(step.id for step, _ in between)
    reasons = chain_misfits([a, *(listing for _, listing in between), b])
    if reasons:
        return ConnectionView(
            status=ConnectionStatus.OPEN,
            conditioning_step_ids=ids,
            reason=f"the steps between {a.name!r} and {b.name!r} no longer fit: {'; '.join(reasons[:3])}",
            **base,
        )
    used = {listing.id for _, listing in between}
    others = [c for c in await find_conditioners(session, actor, a, b) if c.id not in used]
    names = ", ".join(repr(listing.name) for _, listing in between)
    return ConnectionView(
        status=ConnectionStatus.CONDITIONED,
        conditioning_step_ids=ids,
        reason=f"{a.output_format} → {b.input_format} through {names}",
        alternatives=tuple(as_alternative(c) for c in others[:MAX_ALTERNATIVES]),
        **base,
    )
