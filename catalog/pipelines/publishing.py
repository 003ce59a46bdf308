"""Publishing a pipeline as a listing of kind ``pipeline``, so others can find and reuse the chain.

The listing goes through the catalog's own ``ListingService.create`` (validation, embedding, search
index — all or nothing). What it declares is derived, not typed in: input = the first step's input,
output = the last step's output, suggested resources = the per-field maximum over its steps (steps run
one after another), latency and accuracy = medians over the pipeline's successful runs (none until it
has run: an unmeasured figure is left empty rather than guessed). The listing names none of its steps or
the private pipeline behind it (``pipelines.listing_id`` links them): anyone who can see the listing reads
its ``extra``, and a step may be a listing few may see, such as the publisher's trained model. Every
step must reach whoever the listing is published to (``audience``): a public listing whose trained
model is private would run for nobody else, so it is refused.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from catalog.actors import Actor
from catalog.enums import JobStatus, ListingKind, Visibility
from catalog.pipelines.audience import refuse_unreachable_steps
from catalog.pipelines.service import PipelineService
from catalog.pipelines.store import load_rows, owned_pipeline
from infra.errors import BadInput, Conflict
from infra.tables import Job

if TYPE_CHECKING:
    from catalog.listing_view import ListingView
    from catalog.listings import ListingService

MEASURED_RUNS = 200  # the most recent successful runs the figures are taken from


async def run_figures(pipelines: PipelineService, pipeline_id: str) -> dict[str, float | None]:
    """Median end-to-end latency per record and accuracy over the pipeline's recent successful runs."""
    async with pipelines.db.session() as session:
        metrics = (
            (
                await session.execute(
                    select(Job.metrics)
                    .where(Job.pipeline_id == pipeline_id, Job.status == JobStatus.SUCCEEDED.value)
                    .order_by(Job.finished_at.desc())
                    .limit(MEASURED_RUNS)
                )
            )
            .scalars()
            .all()
        )
    return {
        key: _median([m.get(key) for m in metrics if isinstance(m, dict)])
        for key in ("latency_ms", "accuracy")
    }


def _median(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return statistics.median(numbers) if numbers else None


async def publish_pipeline(
    pipelines: PipelineService,
    listings: ListingService,
    actor: Actor,
    pipeline_id: str,
    *,
    name: str | None = None,
    category: str | None = None,
    description: str | None = None,
    tags: list[str] | None = None,
    visibility: str = Visibility.PUBLIC.value,
) -> ListingView:
    """Create the pipeline's listing (owned by the caller) and link it; a pipeline is published once."""
    view = await pipelines.get(actor, pipeline_id)
    if view.listing_id is not None:
        raise Conflict(f"pipeline {view.name!r} is already published as listing {view.listing_id}")
    if not view.is_runnable:
        reasons = [c.reason for c in view.open_connections] + [
            s.not_runnable_reason or "" for s in view.steps if not s.runnable
        ]
        raise BadInput(
            f"only a runnable pipeline can be published: {'; '.join(reasons) or 'it has no steps'}"
        )
    plan = await pipelines.plan_run(actor, pipeline_id)
    async with pipelines.db.session() as session:
        await refuse_unreachable_steps(session, pipeline_id, visibility)
        rows = await load_rows(session, pipeline_id)
    first, last = rows[0][1], rows[-1][1]
    figures = await run_figures(pipelines, pipeline_id)
    data: dict[str, Any] = {
        "name": name or view.name,
        "kind": ListingKind.PIPELINE.value,
        "category": category or last.category,
        "description": description if description is not None else view.description,
        "tags": tags or [],
        "visibility": visibility,
        "input_format": first.input_format,
        "input_schema": first.input_schema,
        "output_format": last.output_format,
        "output_schema": last.output_schema,
        "resources": plan.resources or None,
        "latency_ms": figures["latency_ms"],
        "accuracy": figures["accuracy"],
        "resource_classes": list(plan.resource_classes),
    }
    listing = await listings.create(
        actor, {k: v for k, v in data.items() if v is not None}, written_by_platform=True
    )
    try:
        async with pipelines.db.session() as session:
            pipeline = await owned_pipeline(session, actor, pipeline_id, lock=True)
            if pipeline.listing_id is not None:
                raise Conflict(f"pipeline {pipeline.name!r} was published concurrently")
            pipeline.listing_id = listing.id
    except BaseException:
        await listings.delete(actor, listing.id)  # never leave a listing that no pipeline backs
        raise
    return listing
