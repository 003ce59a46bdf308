"""Judging a pipeline as it stands: each step's view and the verdict on every connection.

Read-only: this is what ``Query.pipeline`` shows. A connection is judged between consecutive chosen
steps, through whatever conditioning steps sit between them; an open one carries the reason and the
visible conditioners that could close it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from catalog.actors import Actor
from catalog.clock import as_utc
from catalog.pipelines.conditioning import (
    MAX_ALTERNATIVES,
    as_alternative,
    chain_misfits,
    describe_gap,
    find_conditioners,
    needs_training,
)
from catalog.pipelines.store import Row, load_rows, unseen_listing_ids
from catalog.pipelines.views import (
    UNAVAILABLE_LISTING_NAME,
    ConnectionStatus,
    ConnectionView,
    PipelineView,
    StepRole,
    StepView,
)
from infra.tables import Listing, Pipeline, PipelineStep


async def build_view(session: AsyncSession, actor: Actor, pipeline: Pipeline) -> PipelineView:
    rows = await load_rows(session, pipeline.id)
    unseen = await unseen_listing_ids(session, actor, rows)
    steps = tuple(step_view(step, listing, listing.id not in unseen) for step, listing in rows)
    connections = []
    chosen = [i for i, (step, _) in enumerate(rows) if step.role == StepRole.STEP]
    for i, j in itertools.pairwise(chosen):
        hidden = [view for view in steps[i : j + 1] if not view.available]
        if hidden:
            connections.append(unavailable_connection(steps[i], steps[i + 1 : j], steps[j], hidden))
        else:
            connections.append(await connection_view(session, actor, rows[i], rows[i + 1 : j], rows[j]))
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
    )


def step_view(step: PipelineStep, listing: Listing, available: bool = True) -> StepView:
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
        reason=f"it goes through step {', '.join(str(step.position + 1) for step in hidden)}, "
        "whose listing is no longer available to you",
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
