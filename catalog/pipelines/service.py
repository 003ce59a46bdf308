"""Pipelines in a requester's account: create, add and remove steps, and keep every connection honest.

Every structural change ends with ``reconcile``: between each pair of consecutive chosen steps it keeps
the conditioning steps that still bridge them, drops those that no longer do, and — where the output
does not fit the next input — inserts the best visible conditioner or, when none exists, leaves the
connection open and logs it as unmet demand. The whole change is one transaction: a failed add leaves the
pipeline exactly as it was. A published pipeline's change must leave every step within reach of the
listing's audience (``audience.keep_published_reachable``) and every connection it makes fitting, with
the ends the listing declares (``published_chain.keep_published_chain``), or it is refused and rolled back.

Pipelines are private: anyone but their owner (and admins) gets NOT_FOUND, as for private listings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.actors import Actor
from catalog.demand_log import may_select, unknown_search
from catalog.enums import ListingKind
from catalog.pipelines.audience import keep_published_reachable
from catalog.pipelines.conditioning import STEP_KINDS, chain_misfits, find_conditioners
from catalog.pipelines.evaluation import build_view
from catalog.pipelines.gaps import Gap, gap_between, log_gaps
from catalog.pipelines.published_chain import chain_shape, keep_published_chain
from catalog.pipelines.runnability import MAX_NESTING
from catalog.pipelines.running import RunPlan, StepPlan, resource_class_for
from catalog.pipelines.search_context import PipelineSlot, restrict_filters, slot_between
from catalog.pipelines.store import (
    Row,
    carries_code,
    check_training_data,
    chosen_pairs,
    load_rows,
    owned_pipeline,
    refuse_cycle,
    require_account,
    source_pipeline,
    step_row,
    unseen_listing_ids,
    visible_listing,
)
from catalog.pipelines.views import (
    PipelineView,
    StepChange,
    StepRole,
    deleted_reason,
    trained_unavailable_reason,
)
from catalog.text_checks import refuse_nul
from infra.db import Database
from infra.errors import BadInput, Conflict, NotFound
from infra.tables import Listing, Pipeline, PipelineStep, SearchEvent, utcnow
from search.types import SearchFilters

if TYPE_CHECKING:
    from catalog.demand import DemandService

MAX_NAME = 200
MAX_DESCRIPTION = 5000
MAX_STEPS = 50
# Set on a chosen step when its owner removed the conditioner in front of it: propose, don't re-insert.
MANUAL_CONDITIONING = "manual_conditioning_from"


@dataclass
class _Outcome:
    inserted: list[str] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)


class PipelineService:
    def __init__(self, db: Database, demand: DemandService) -> None:
        self.db = db
        self.demand = demand

    # ------------------------------------------------------------------ reads

    async def get(self, actor: Actor, pipeline_id: str) -> PipelineView:
        async with self.db.session() as session:
            pipeline = await owned_pipeline(session, actor, pipeline_id)
            return await self._view(session, actor, pipeline)

    async def list_mine(self, actor: Actor) -> list[PipelineView]:
        require_account(actor)
        async with self.db.session() as session:
            rows = (
                (
                    await session.execute(
                        select(Pipeline)
                        .where(Pipeline.owner_id == actor.account_id)
                        .order_by(Pipeline.created_at)
                    )
                )
                .scalars()
                .all()
            )
            return [await self._view(session, actor, p) for p in rows]

    async def search_slot(self, actor: Actor, pipeline_id: str, position: int | None) -> PipelineSlot:
        """The slot at ``position`` of the step list (None: after the last step), for
        ``SearchInput.pipeline`` (``search_context``)."""
        async with self.db.session() as session:
            pipeline = await owned_pipeline(session, actor, pipeline_id)
            rows = await load_rows(session, pipeline.id)
            if position is None:
                position = len(rows)
            if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= len(rows):
                raise BadInput(
                    f"position must be between 0 and {len(rows)} for this pipeline", field="position"
                )
            before = rows[position - 1] if position > 0 else None
            after = rows[position] if position < len(rows) else None
            unseen = await unseen_listing_ids(session, actor, [row for row in (before, after) if row])
        return slot_between(pipeline.id, position, before, after, unseen)

    async def narrow_search(
        self, actor: Actor, pipeline_id: str, position: int | None, filters: SearchFilters
    ) -> tuple[SearchFilters, PipelineSlot]:
        """What the catalog search calls for ``SearchInput.pipeline``: facets restricted to the slot.

        Post-filter the ranked rows with ``search_context.slot_misfits(slot, row)`` for the exact schemas.
        """
        slot = await self.search_slot(actor, pipeline_id, position)
        return restrict_filters(filters, slot), slot

    async def plan_run(self, actor: Actor, pipeline_id: str) -> RunPlan:
        """The per-step plan of an inference run (``runJob`` on a pipeline); BadInput if it cannot run.

        Nested pipeline listings are expanded into their steps; a trained step runs its trained model.
        """
        async with self.db.session() as session:
            pipeline = await owned_pipeline(session, actor, pipeline_id)
            plans: list[StepPlan] = []
            await self._plan_steps(session, actor, pipeline, f"pipeline {pipeline.name!r}", plans, depth=0)
        return RunPlan(pipeline_id=pipeline.id, steps=tuple(plans))

    async def plan_listing_run(self, actor: Actor, listing_id: str) -> RunPlan:
        """The plan for ``runJob`` on a *pipeline listing*: anyone who can see the listing can run it.

        The stored pipeline behind it stays private to its owner; only its plan is used, and each of its
        steps must still be visible to the caller (a published chain cannot smuggle in private models).
        """
        async with self.db.session() as session:
            listing = await visible_listing(session, actor, listing_id)
            if listing.kind != ListingKind.PIPELINE:
                raise BadInput(f"{listing.name!r} is a {listing.kind}, not a pipeline")
            source = await source_pipeline(session, listing.id)
            if source is None:
                raise BadInput(f"pipeline listing {listing.name!r} has no stored steps to run")
            plans: list[StepPlan] = []
            await self._plan_steps(
                session, actor, source, f"pipeline listing {listing.name!r}", plans, depth=0
            )
        return RunPlan(pipeline_id=source.id, steps=tuple(plans))

    async def _plan_steps(
        self,
        session: AsyncSession,
        actor: Actor,
        pipeline: Pipeline,
        label: str,
        plans: list[StepPlan],
        depth: int,
    ) -> None:
        """Append ``pipeline``'s steps to ``plans``. ``label`` names it in errors as the caller knows it:
        behind a listing, by the listing's name (the stored pipeline and its name are its owner's)."""
        if depth > MAX_NESTING:
            raise BadInput(f"pipelines nest deeper than {MAX_NESTING} levels")
        view = await self._view(session, actor, pipeline, depth)
        if not view.steps:
            raise BadInput(f"{label} has no steps")
        # The view's verdict is ``isRunnable``'s: a run is refused exactly when it says false.
        problems = [f"open connection: {c.reason}" for c in view.open_connections]
        problems += [s.not_runnable_reason or "" for s in view.steps if not s.runnable]
        if problems:
            raise BadInput(f"{label} cannot run yet: {'; '.join(problems)}")
        await self.plan_rows(session, actor, await load_rows(session, pipeline.id), label, plans, depth)

    async def plan_rows(
        self,
        session: AsyncSession,
        actor: Actor,
        rows: Sequence[Row],
        label: str,
        plans: list[StepPlan],
        depth: int,
    ) -> None:
        """Append the plans of ``rows`` (steps of one pipeline, in order) to ``plans``: a trained step
        runs its model, a nested pipeline listing its own steps. The caller judged the rows runnable."""
        for step, listing in rows:
            if listing is None:  # deleted since the view was read
                raise BadInput(f"{label} cannot run yet: {deleted_reason(step.position)}")
            runs = listing
            if step.trained_listing_id is not None:
                try:
                    runs = await visible_listing(session, actor, step.trained_listing_id)
                except NotFound:  # made private since the view was read
                    raise BadInput(trained_unavailable_reason(step.position)) from None
            else:
                await visible_listing(session, actor, listing.id)
            if runs.kind == ListingKind.PIPELINE and not await carries_code(session, runs.id):
                source = await source_pipeline(session, runs.id)
                if source is None:
                    raise BadInput(f"pipeline listing {runs.name!r} has no stored steps to run")
                await self._plan_steps(
                    session, actor, source, f"pipeline listing {runs.name!r}", plans, depth + 1
                )
                continue
            resources = dict(runs.resources or {})
            plans.append(
                StepPlan(
                    index=len(plans),
                    step_id=step.id,
                    role=step.role,
                    listing_id=runs.id,
                    listing_name=runs.name,
                    resource_class=resource_class_for(resources),
                    resources=resources,
                    timeout_s=runs.timeout_s,
                    input_format=runs.input_format,
                    input_schema=runs.input_schema,
                    output_format=runs.output_format,
                    output_schema=runs.output_schema,
                )
            )

    # ------------------------------------------------------------------ writes

    async def create(self, actor: Actor, name: str, description: str = "") -> PipelineView:
        require_account(actor)
        name = (name or "").strip()
        refuse_nul("name", name)
        refuse_nul("description", description)
        if not name or len(name) > MAX_NAME:
            raise BadInput(f"a pipeline name is required (1 to {MAX_NAME} characters)", field="name")
        if len(description or "") > MAX_DESCRIPTION:
            raise BadInput(f"description is longer than {MAX_DESCRIPTION} characters", field="description")
        async with self.db.session() as session:
            pipeline = Pipeline(owner_id=actor.account_id, name=name, description=description or "")
            session.add(pipeline)
            await session.flush()
            return await self._view(session, actor, pipeline)

    async def delete(self, actor: Actor, pipeline_id: str) -> None:
        """Delete a pipeline; a published one is refused, since its listing runs from these steps."""
        async with self.db.session() as session:
            pipeline = await owned_pipeline(session, actor, pipeline_id, lock=True)
            if pipeline.listing_id is not None and await session.get(Listing, pipeline.listing_id):
                raise Conflict(
                    f"pipeline {pipeline.name!r} is published as listing {pipeline.listing_id}; "
                    "delete that listing first"
                )
            await session.execute(delete(PipelineStep).where(PipelineStep.pipeline_id == pipeline.id))
            await session.delete(pipeline)

    async def add_step(
        self,
        actor: Actor,
        pipeline_id: str,
        listing_id: str,
        after: str | None = None,
        *,
        at_start: bool = False,
        training_data_listing_id: str | None = None,
        auto_condition: bool = True,
        search_id: str | None = None,
    ) -> StepChange:
        """Insert a listing after step ``after`` (default: at the end; ``at_start``: first) and reconnect.

        ``search_id`` is the search the listing was found through: adding it meets that search's need.
        """
        if after is not None and at_start:
            raise BadInput("give either 'after' or 'atStart', not both", field="atStart")
        if search_id is not None:
            await self.demand.flush()  # searches are logged in batches: a fresh one may not be written yet
        async with self.db.session() as session:
            pipeline = await owned_pipeline(session, actor, pipeline_id, lock=True)
            listing = await visible_listing(session, actor, listing_id)
            if listing.kind not in STEP_KINDS:
                raise BadInput(
                    f"{listing.name!r} is a {listing.kind}; "
                    f"pipeline steps are {', '.join(STEP_KINDS)} listings",
                    field="listingId",
                )
            await refuse_cycle(session, pipeline, listing)
            if search_id is not None:
                search = await session.get(SearchEvent, search_id)
                if search is None or not may_select(search.account_id, actor):
                    raise unknown_search(search_id)
            rows = await load_rows(session, pipeline.id)
            if len(rows) >= MAX_STEPS:
                raise BadInput(f"a pipeline holds at most {MAX_STEPS} steps")
            if after is None:
                index = 0 if at_start else len(rows)
            else:
                positions = [i for i, (step, _) in enumerate(rows) if step.id == after]
                if not positions:
                    raise NotFound(f"step {after!r} is not in this pipeline")
                index = positions[0] + 1
            step = PipelineStep(
                pipeline_id=pipeline.id, position=index, listing_id=listing.id, role=StepRole.STEP
            )
            if training_data_listing_id is not None:
                dataset = await visible_listing(
                    session, actor, training_data_listing_id, field="trainingDataListingId"
                )
                check_training_data(listing, dataset, "trainingDataListingId")
                step.training_data_listing_id = dataset.id
            session.add(step)
            await session.flush()
            before, shape = chosen_pairs(rows), chain_shape(rows)
            rows.insert(index, (step, listing))
            outcome = await self.reconcile(session, actor, pipeline, rows, before, auto_condition)
            await keep_published_reachable(session, pipeline, [step.id, *outcome.inserted])
            view = await self._view(session, actor, pipeline)
            await keep_published_chain(session, pipeline, shape, rows, view)
        if search_id is not None:
            await self.demand.record_selection(search_id, listing.id, actor)
        await log_gaps(self.demand, actor, outcome.gaps)
        return _change(view, step.id, outcome)

    async def remove_step(self, actor: Actor, pipeline_id: str, step_id: str) -> StepChange:
        """Remove a step; removing a conditioner leaves that connection to its owner (proposals only)."""
        async with self.db.session() as session:
            pipeline = await owned_pipeline(session, actor, pipeline_id, lock=True)
            rows = await load_rows(session, pipeline.id)
            index = next((i for i, (step, _) in enumerate(rows) if step.id == step_id), None)
            if index is None:
                raise NotFound(f"step {step_id!r} is not in this pipeline")
            before, shape = chosen_pairs(rows), chain_shape(rows)
            removed, _ = rows.pop(index)
            if removed.role == StepRole.CONDITIONING:
                upstream = next((s for s, _ in reversed(rows[:index]) if s.role == StepRole.STEP), None)
                downstream = next((s for s, _ in rows[index:] if s.role == StepRole.STEP), None)
                if upstream is not None and downstream is not None:
                    downstream.config = {**(downstream.config or {}), MANUAL_CONDITIONING: upstream.id}
            await session.delete(removed)
            await session.flush()
            outcome = await self.reconcile(session, actor, pipeline, rows, before, auto=True)
            await keep_published_reachable(session, pipeline, outcome.inserted)
            view = await self._view(session, actor, pipeline)
            await keep_published_chain(session, pipeline, shape, rows, view)
        await log_gaps(self.demand, actor, outcome.gaps)
        return _change(view, None, outcome)

    async def set_training_data(
        self, actor: Actor, pipeline_id: str, step_id: str, dataset_listing_id: str | None
    ) -> PipelineView:
        """Choose (or clear) the dataset an algorithm step is trained on before the pipeline runs.

        It drops the step's trained model, so a published listing of the pipeline that others run refuses
        it (``keep_published_reachable``): its next model, trained, would be private."""
        async with self.db.session() as session:
            pipeline = await owned_pipeline(session, actor, pipeline_id, lock=True)
            step, listing = await step_row(session, pipeline.id, step_id)
            if dataset_listing_id is None:
                step.training_data_listing_id = None
            else:
                dataset = await visible_listing(session, actor, dataset_listing_id, field="datasetListingId")
                check_training_data(listing, dataset, "datasetListingId")
                step.training_data_listing_id = dataset.id
            step.trained_listing_id = None  # a model trained on other data is not this step's model
            await session.flush()
            await keep_published_reachable(session, pipeline, [step.id])
            return await self._view(session, actor, pipeline)

    # ------------------------------------------------------------------ connections

    async def reconcile(
        self,
        session: AsyncSession,
        actor: Actor,
        pipeline: Pipeline,
        rows: list[Row],
        before: set[tuple[str, str]],
        auto: bool,
    ) -> _Outcome:
        outcome = _Outcome()
        ordered: list[Row] = []
        chosen = [i for i, (step, _) in enumerate(rows) if step.role == StepRole.STEP]
        # Conditioners before the first or after the last chosen step bridge nothing any more.
        orphans = rows[: chosen[0]] + rows[chosen[-1] + 1 :] if chosen else list(rows)
        for step, _ in orphans:
            await session.delete(step)
        for n, i in enumerate(chosen):
            ordered.append(rows[i])
            if n + 1 == len(chosen):
                break
            j = chosen[n + 1]
            producer, consumer = rows[i], rows[j]
            between = rows[i + 1 : j]
            chain = [producer[1], *(listing for _, listing in between), consumer[1]]
            if any(listing is None for listing in chain):
                # A deleted listing proves nothing either way: the connection stays as its owner left
                # it, open (``views.deleted_reason``), until they remove or replace that step.
                ordered.extend(between)
                continue
            if between and not chain_misfits(chain):
                ordered.extend(between)  # the conditioners in place still bridge this connection
                continue
            for step, _ in between:
                await session.delete(step)
            # Auto-conditioning is for the connections this change makes (and for replacing conditioners
            # that stopped fitting): a gap the owner left open, say with ``auto_condition=False``, stays
            # open when a later change elsewhere has it on.
            pair = (producer[0].id, consumer[0].id)
            fill = auto and (pair not in before or bool(between))
            if chain_misfits([producer[1], consumer[1]]):
                ordered.extend(
                    await self._bridge(session, actor, pipeline, producer, consumer, before, fill, outcome)
                )
        for position, (step, _) in enumerate(ordered):
            step.position = position
        pipeline.updated_at = utcnow()
        await session.flush()
        rows[:] = ordered
        return outcome

    async def _bridge(
        self,
        session: AsyncSession,
        actor: Actor,
        pipeline: Pipeline,
        producer: Row,
        consumer: Row,
        before: set[tuple[str, str]],
        auto: bool,
        outcome: _Outcome,
    ) -> list[Row]:
        manual = (consumer[0].config or {}).get(MANUAL_CONDITIONING) == producer[0].id
        candidates = await find_conditioners(session, actor, producer[1], consumer[1])
        if candidates and auto and not manual:
            best = candidates[0]
            step = PipelineStep(
                pipeline_id=pipeline.id,
                position=consumer[0].position,
                listing_id=best.id,
                role=StepRole.CONDITIONING,
                config={"bridges": [producer[0].id, consumer[0].id]},
            )
            session.add(step)
            await session.flush()
            outcome.inserted.append(step.id)
            return [(step, best)]
        if not candidates and (producer[0].id, consumer[0].id) not in before:
            outcome.gaps.append(gap_between(producer[1], consumer[1]))
        return []

    async def _view(
        self, session: AsyncSession, actor: Actor, pipeline: Pipeline, depth: int = 0
    ) -> PipelineView:
        return await build_view(session, actor, pipeline, depth)


def _change(view: PipelineView, step_id: str | None, outcome: _Outcome) -> StepChange:
    return StepChange(
        pipeline=view,
        step_id=step_id,
        inserted_conditioning_step_ids=tuple(outcome.inserted),
        opened=view.open_connections,
    )
