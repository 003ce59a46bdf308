"""Pre-training → post-training: train a pipeline's algorithm steps, then derive the runnable pipeline.

A pre-training pipeline may hold algorithm steps that must learn from data first (each with its chosen
dataset). Training runs one executor training job per such step — ``TrainStep`` is the executor's
function: it trains the algorithm on the dataset in a sandbox and returns the new model listing (owned by
the requester). The model is attached to its step only if it reads and emits what the algorithm
declared, and the post-training pipeline is a new pipeline of the requester whose steps are all
runnable models, connected and checked like any other.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.actors import Actor
from catalog.enums import ListingKind
from catalog.formats import canonical_ref, check_connection
from catalog.pipelines.audience import keep_published_reachable
from catalog.pipelines.conditioning import needs_training
from catalog.pipelines.running import RunPlan, StepPlan, resource_class_for
from catalog.pipelines.service import PipelineService
from catalog.pipelines.store import Row, load_rows, owned_pipeline, require_visible_steps, visible_listing
from catalog.pipelines.views import PipelineView, StepRole, deleted_reason
from infra.errors import BadInput
from infra.tables import Listing, Pipeline, PipelineStep

POST_TRAINING_SUFFIX = " (trained)"


@dataclass(frozen=True, slots=True)
class TrainingTask:
    pipeline_id: str
    step_id: str
    position: int  # the step's place in the pipeline (0-based): errors number it as the pipeline does
    algorithm_listing_id: str
    algorithm_name: str
    dataset_listing_id: str
    resources: dict[str, Any]
    resource_class: str


# The executor's training job for one task; returns the id of the model listing it produced.
TrainStep = Callable[[TrainingTask], Awaitable[str]]


class PipelineTraining:
    def __init__(self, pipelines: PipelineService) -> None:
        self.pipelines = pipelines
        self.db = pipelines.db

    async def plan(self, actor: Actor, pipeline_id: str) -> list[TrainingTask]:
        """One task per step still to train: untrained, its model deleted by its owner, or its data fed
        through a step trained again (it learnt from what that step's old model handed it). BadInput
        naming every step that has no training data, or the step a published listing of the pipeline
        would lose (``audience.keep_published_reachable``: the model training yields is private) before
        any job."""
        async with self.db.session() as session:
            pipeline = await owned_pipeline(session, actor, pipeline_id)
            rows = await load_rows(session, pipeline.id)
            await require_visible_steps(session, actor, rows)
            models = await existing_ids(
                session, [s.trained_listing_id for s, _ in rows if s.trained_listing_id]
            )
            tasks, missing = [], []
            retrained = None  # the position of the first step to train: what comes after it changes
            for position, (step, listing) in enumerate(rows):
                if not needs_training(listing):
                    continue
                trained = step.trained_listing_id in models  # a deleted model is trained again
                if trained and (retrained is None or step.training_data_listing_id is None):
                    continue
                if step.training_data_listing_id is None:
                    missing.append(listing.name)
                    continue
                dataset = await visible_listing(session, actor, step.training_data_listing_id)
                fed = dataset.input_format or listing.input_format
                if trained and not (fed and entry_position(rows[: position + 1], fed) <= retrained):
                    continue  # its data does not go through the step trained again
                retrained = position if retrained is None else retrained
                resources = dict(listing.training_resources or listing.resources or {})
                tasks.append(
                    TrainingTask(
                        pipeline_id=pipeline.id,
                        step_id=step.id,
                        position=position,
                        algorithm_listing_id=listing.id,
                        algorithm_name=listing.name,
                        dataset_listing_id=step.training_data_listing_id,
                        resources=resources,
                        resource_class=resource_class_for(resources),
                    )
                )
            if tasks:  # before any job: the model training yields is private, out of a listing's reach
                await keep_published_reachable(session, pipeline, [task.step_id for task in tasks])
        if missing:
            names = ", ".join(repr(n) for n in missing)
            raise BadInput(f"choose training data for {names} before training the pipeline")
        return tasks

    async def feed_plan(self, actor: Actor, task: TrainingTask) -> RunPlan | None:
        """The steps before ``task``'s step that its training data runs through first, as a run plan;
        None when the data enters at the step itself.

        The data enters the chain at the first step that reads what the dataset holds (its declared input
        format, else the algorithm's): a dataset of what the pipeline is fed runs through every step in
        front of the algorithm, as the pipeline will run its inputs; a dataset already in the step's own
        form (crops labelled for a classifier behind a detector) enters at the step. Without a declared
        format the data enters at the step. Steps train in chain order, so a trained step in front runs
        its model: a later step learns from the outputs the pipeline will really hand it."""
        async with self.db.session() as session:
            pipeline = await owned_pipeline(session, actor, task.pipeline_id)
            rows = await load_rows(session, pipeline.id)
            await require_visible_steps(session, actor, rows)
            index = next((i for i, (step, _) in enumerate(rows) if step.id == task.step_id), None)
            if index is None:
                raise BadInput(f"the step of {task.algorithm_name!r} is no longer in the pipeline")
            algorithm = rows[index][1]
            dataset = await visible_listing(session, actor, task.dataset_listing_id)
            assert algorithm is not None  # require_visible_steps refused a deleted one
            fed = dataset.input_format or algorithm.input_format
            if not fed:
                return None
            entry = entry_position(rows[: index + 1], fed)
            if entry == index:
                return None
            untrained = [
                listing.name
                for step, listing in rows[entry:index]
                if listing is not None and needs_training(listing) and step.trained_listing_id is None
            ]
            if untrained:
                raise BadInput(
                    f"{task.algorithm_name!r} learns from what {', '.join(repr(n) for n in untrained)} "
                    "hand it: train those steps first"
                )
            plans: list[StepPlan] = []
            label = f"pipeline {pipeline.name!r}"
            await self.pipelines.plan_rows(session, actor, rows[entry:index], label, plans, depth=0)
        # Numbered from the entry step's place in the pipeline, as a run of the pipeline numbers them
        # (feeding from step 2, "step 1" in an error named the wrong step).
        return RunPlan(pipeline_id=pipeline.id, steps=tuple(replace(p, index=p.index + entry) for p in plans))

    async def attach(
        self, actor: Actor, pipeline_id: str, step_id: str, model_listing_id: str
    ) -> PipelineView:
        """Record the model trained for an algorithm step (it must keep the algorithm's input and output)."""
        async with self.db.session() as session:
            pipeline = await owned_pipeline(session, actor, pipeline_id, lock=True)
            row = next((r for r in await load_rows(session, pipeline.id) if r[0].id == step_id), None)
            if row is None:
                raise BadInput(f"step {step_id!r} is not in this pipeline")
            step, algorithm = row
            if algorithm is None:
                raise BadInput(deleted_reason(step.position))
            if not needs_training(algorithm):
                raise BadInput(
                    f"{algorithm.name!r} runs as it is (it declares no training_resources): nothing to train"
                )
            model = await visible_listing(session, actor, model_listing_id)
            check_trained_model(algorithm, model)
            step.trained_listing_id = model.id
            await session.flush()
            await keep_published_reachable(session, pipeline, [step.id])  # the listing may have widened
        return await self.pipelines.get(actor, pipeline_id)

    async def train(self, actor: Actor, pipeline_id: str, train_step: TrainStep) -> PipelineView:
        """Train every step that needs it, then return the post-training pipeline (a new pipeline)."""
        for task in await self.plan(actor, pipeline_id):
            model_id = await train_step(task)
            await self.attach(actor, pipeline_id, task.step_id, model_id)
        return await self.derive_post_training(actor, pipeline_id)

    async def derive_post_training(self, actor: Actor, pipeline_id: str) -> PipelineView:
        """A new pipeline of the same chain with each trained step replaced by its model."""
        async with self.db.session() as session:
            source = await owned_pipeline(session, actor, pipeline_id)
            rows = await load_rows(session, source.id)
            await require_visible_steps(session, actor, rows)
            models = await existing_ids(
                session, [s.trained_listing_id for s, _ in rows if s.trained_listing_id]
            )
            untrained = [
                listing.name
                for step, listing in rows
                if needs_training(listing) and step.trained_listing_id not in models
            ]
            if untrained:
                raise BadInput(f"steps still to train: {', '.join(repr(n) for n in untrained)}")
            derived = Pipeline(
                owner_id=actor.account_id,
                name=(source.name + POST_TRAINING_SUFFIX)[-200:],
                description=source.description,
            )
            session.add(derived)
            await session.flush()
            ids: dict[str, str] = {}
            for step, _ in rows:
                copy = PipelineStep(
                    pipeline_id=derived.id,
                    position=step.position,
                    listing_id=step.trained_listing_id or step.listing_id,
                    role=step.role,
                    config={**(step.config or {}), "derived_from_step": step.id},
                )
                session.add(copy)
                await session.flush()
                ids[step.id] = copy.id
            for step, _ in rows:  # keep the record of which connection each conditioner bridges
                bridges = (step.config or {}).get("bridges")
                if step.role == StepRole.CONDITIONING and bridges:
                    copy = await session.get(PipelineStep, ids[step.id])
                    copy.config = {**copy.config, "bridges": [ids.get(b, b) for b in bridges]}
            copied = await load_rows(session, derived.id)
            chosen = [s.id for s, _ in copied if s.role == StepRole.STEP]
            await self.pipelines.reconcile(
                session, actor, derived, copied, set(itertools.pairwise(chosen)), auto=True
            )
            derived_id = derived.id
        return await self.pipelines.get(actor, derived_id)


def entry_position(rows: Sequence[Row], fed: str) -> int:
    """Where data of format ``fed`` enters ``rows`` (the steps up to the one it trains): the first step
    that reads it, else the last row (the trained step itself)."""
    wanted = canonical_ref(fed)
    for position, (_, listing) in enumerate(rows):
        if listing is not None and listing.input_format and canonical_ref(listing.input_format) == wanted:
            return position
    return len(rows) - 1


async def existing_ids(session: AsyncSession, listing_ids: list[str]) -> set[str]:
    """Which of the listings still exist: a step's trained model may have been deleted by its owner."""
    if not listing_ids:
        return set()
    return set(await session.scalars(select(Listing.id).where(Listing.id.in_(listing_ids))))


def check_trained_model(algorithm: Listing, model: Listing) -> None:
    """The trained model takes the algorithm's place: it must accept all the algorithm accepted and emit
    only what the algorithm declared it would."""
    if model.kind != ListingKind.MODEL:
        raise BadInput(f"a trained step needs a model listing; {model.name!r} is a {model.kind}")
    accepts = check_connection(
        algorithm.input_format, algorithm.input_schema, model.input_format, model.input_schema
    )
    emits = check_connection(
        model.output_format, model.output_schema, algorithm.output_format, algorithm.output_schema
    )
    problems = [
        f"{side}: {'; '.join(c.reasons)}" for side, c in (("input", accepts), ("output", emits)) if not c.ok
    ]
    if problems:
        raise BadInput(
            f"model {model.name!r} does not fit the step of {algorithm.name!r}: {' / '.join(problems)}"
        )
