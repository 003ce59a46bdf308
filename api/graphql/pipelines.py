"""GraphQL for pipelines: build them step by step and read every connection's verdict.

Resolvers only translate: ``catalog.pipelines.PipelineService`` (``CatalogApp.pipelines``) checks access,
formats and schemas, inserts conditioning steps and logs gaps. Running and training a pipeline are jobs
(``Mutation.runJob(pipelineId:)``, ``Mutation.trainPipeline`` in the jobs area).
"""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.graphql.types import Listing, Resources, Visibility
from catalog.enums import Visibility as VisibilityValue
from catalog.pipelines import (
    Alternative,
    ConnectionStatus,
    ConnectionView,
    PipelineService,
    PipelineView,
    StepChange,
    StepRole,
    StepView,
)
from catalog.pipelines.publishing import publish_pipeline
from catalog.pipelines.running import StepPlan

PipelineStepRole = strawberry.enum(StepRole, name="PipelineStepRole")
PipelineConnectionStatus = strawberry.enum(ConnectionStatus, name="PipelineConnectionStatus")


def pipelines_of(info: strawberry.Info) -> PipelineService:
    return info.context.catalog.pipelines


@strawberry.type(description="A listing that could convert one step's output into the next step's input.")
class ConditioningAlternative:
    listing_id: strawberry.ID
    name: str
    kind: str
    verified: bool
    accuracy: float | None
    latency_p50_ms: float | None

    @classmethod
    def of(cls, alt: Alternative) -> ConditioningAlternative:
        return cls(
            listing_id=strawberry.ID(alt.listing_id),
            name=alt.name,
            kind=alt.kind,
            verified=alt.verified,
            accuracy=alt.accuracy,
            latency_p50_ms=alt.latency_p50_ms,
        )


@strawberry.type
class PipelineStep:
    id: strawberry.ID
    position: int
    role: PipelineStepRole
    listing_id: strawberry.ID
    listing_name: str
    kind: str
    input_format: str | None
    output_format: str | None
    resources: Resources | None
    needs_training: bool
    runnable: bool
    not_runnable_reason: str | None = strawberry.field(
        description="Why runJob would refuse the pipeline because of this step (not visible to you, its "
        "listing deleted, not trained, no published code to run, a nested pipeline that cannot run); null "
        "when it can run."
    )
    training_data_listing_id: strawberry.ID | None
    trained_listing_id: strawberry.ID | None
    available: bool = strawberry.field(
        description="False once the step's listing is no longer visible to you (made private, "
        "suspended or deleted by its owner): the step then shows only its listing id; remove or replace "
        "it to run the pipeline."
    )
    listing_deleted: bool = strawberry.field(
        description="True when the step's listing was deleted by its owner: the step stays (the chain "
        "does not silently shrink) and blocks runs until you remove or replace it."
    )

    @classmethod
    def of(cls, step: StepView) -> PipelineStep:
        return cls(
            id=strawberry.ID(step.id),
            position=step.position,
            role=StepRole(step.role),
            listing_id=strawberry.ID(step.listing_id),
            listing_name=step.listing_name,
            kind=step.kind,
            input_format=step.input_format,
            output_format=step.output_format,
            resources=Resources.from_dict(step.resources),
            needs_training=step.needs_training,
            runnable=step.runnable,
            not_runnable_reason=step.not_runnable_reason,
            training_data_listing_id=_id(step.training_data_listing_id),
            trained_listing_id=_id(step.trained_listing_id),
            available=step.available,
            listing_deleted=step.listing_deleted,
        )


@strawberry.type(description="Between two chosen steps: fits (OK), fits through CONDITIONED steps, or OPEN.")
class PipelineConnection:
    from_step_id: strawberry.ID
    to_step_id: strawberry.ID
    status: PipelineConnectionStatus
    output_format: str | None
    input_format: str | None
    conditioning_step_ids: list[strawberry.ID]
    reason: str
    alternatives: list[ConditioningAlternative]

    @classmethod
    def of(cls, c: ConnectionView) -> PipelineConnection:
        return cls(
            from_step_id=strawberry.ID(c.from_step_id),
            to_step_id=strawberry.ID(c.to_step_id),
            status=ConnectionStatus(c.status),
            output_format=c.output_format,
            input_format=c.input_format,
            conditioning_step_ids=[strawberry.ID(i) for i in c.conditioning_step_ids],
            reason=c.reason,
            alternatives=[ConditioningAlternative.of(a) for a in c.alternatives],
        )


@strawberry.type
class Pipeline:
    id: strawberry.ID
    name: str
    description: str
    listing_id: strawberry.ID | None
    input_format: str | None
    output_format: str | None
    is_complete: bool
    is_trained: bool
    is_runnable: bool
    listing_problem: str | None = strawberry.field(
        description="Why some of those this pipeline's listing is published to cannot run it (a step "
        "made private or deleted, or a trained model deleted, since it was published); null when all can, "
        "or when it is not published. isRunnable is your own verdict."
    )
    steps: list[PipelineStep]
    connections: list[PipelineConnection]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: PipelineView) -> Pipeline:
        return cls(
            id=strawberry.ID(view.id),
            name=view.name,
            description=view.description,
            listing_id=_id(view.listing_id),
            input_format=view.input_format,
            output_format=view.output_format,
            is_complete=view.is_complete,
            is_trained=view.is_trained,
            is_runnable=view.is_runnable,
            listing_problem=view.listing_problem,
            steps=[PipelineStep.of(s) for s in view.steps],
            connections=[PipelineConnection.of(c) for c in view.connections],
            created_at=view.created_at,
            updated_at=view.updated_at,
        )


@strawberry.type(description="A pipeline after a step was added or removed, and what the service did.")
class PipelineStepChange:
    pipeline: Pipeline
    step_id: strawberry.ID | None
    inserted_conditioning_step_ids: list[strawberry.ID]
    opened: list[PipelineConnection] = strawberry.field(
        description="Every connection still open after the change (with reasons and proposals)."
    )

    @classmethod
    def of(cls, change: StepChange) -> PipelineStepChange:
        return cls(
            pipeline=Pipeline.of(change.pipeline),
            step_id=_id(change.step_id),
            inserted_conditioning_step_ids=[strawberry.ID(i) for i in change.inserted_conditioning_step_ids],
            opened=[PipelineConnection.of(c) for c in change.opened],
        )


@strawberry.type(description="One stage of a run: the listing that runs and the resources it gets.")
class PipelineRunStage:
    index: int
    step_id: strawberry.ID
    role: PipelineStepRole
    listing_id: strawberry.ID
    listing_name: str
    resource_class: str
    resources: Resources | None
    timeout_s: float | None
    input_format: str | None
    output_format: str | None

    @classmethod
    def of(cls, stage: StepPlan) -> PipelineRunStage:
        return cls(
            index=stage.index,
            step_id=strawberry.ID(stage.step_id),
            role=StepRole(stage.role),
            listing_id=strawberry.ID(stage.listing_id),
            listing_name=stage.listing_name,
            resource_class=stage.resource_class,
            resources=Resources.from_dict(stage.resources),
            timeout_s=stage.timeout_s,
            input_format=stage.input_format,
            output_format=stage.output_format,
        )


def _id(value: str | None) -> strawberry.ID | None:
    return strawberry.ID(value) if value is not None else None


@strawberry.type
class Query:
    @strawberry.field(description="One of the caller's pipelines, with its steps and connections.")
    async def pipeline(self, info: strawberry.Info, id: strawberry.ID) -> Pipeline:
        return Pipeline.of(await pipelines_of(info).get(info.context.actor, str(id)))

    @strawberry.field(
        description="How a run of the pipeline would execute: its stages in order (nested pipelines "
        "expanded, trained models in place of their algorithms), each on its own resource class. "
        "BAD_INPUT says why a pipeline cannot run yet (open connections, untrained steps)."
    )
    async def pipeline_run_plan(self, info: strawberry.Info, id: strawberry.ID) -> list[PipelineRunStage]:
        plan = await pipelines_of(info).plan_run(info.context.actor, str(id))
        return [PipelineRunStage.of(stage) for stage in plan.steps]

    @strawberry.field(description="The caller's pipelines, oldest first.")
    async def my_pipelines(self, info: strawberry.Info) -> list[Pipeline]:
        return [Pipeline.of(v) for v in await pipelines_of(info).list_mine(info.context.actor)]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Start an empty pipeline in the caller's account (private).")
    async def create_pipeline(self, info: strawberry.Info, name: str, description: str = "") -> Pipeline:
        return Pipeline.of(await pipelines_of(info).create(info.context.actor, name, description))

    @strawberry.mutation(
        description="Insert a listing after step `after` (default: at the end; `atStart`: first). The "
        "service connects it: a fitting conditioning step is inserted when formats differ "
        "(unless `autoCondition` is false), otherwise the connection is reported OPEN. Only the "
        "connections this call makes are conditioned: a gap left open elsewhere stays open. Pass the "
        "`searchId` the listing was found through: that search counts as satisfied."
    )
    async def add_pipeline_step(
        self,
        info: strawberry.Info,
        pipeline_id: strawberry.ID,
        listing_id: strawberry.ID,
        after: strawberry.ID | None = None,
        at_start: bool = False,
        training_data_listing_id: strawberry.ID | None = None,
        auto_condition: bool = True,
        search_id: str | None = None,
    ) -> PipelineStepChange:
        change = await pipelines_of(info).add_step(
            info.context.actor,
            str(pipeline_id),
            str(listing_id),
            str(after) if after is not None else None,
            at_start=at_start,
            training_data_listing_id=str(training_data_listing_id) if training_data_listing_id else None,
            auto_condition=auto_condition,
            search_id=search_id,
        )
        return PipelineStepChange.of(change)

    @strawberry.mutation(description="Remove a step; removing a conditioning step leaves proposals instead.")
    async def remove_pipeline_step(
        self, info: strawberry.Info, pipeline_id: strawberry.ID, step_id: strawberry.ID
    ) -> PipelineStepChange:
        change = await pipelines_of(info).remove_step(info.context.actor, str(pipeline_id), str(step_id))
        return PipelineStepChange.of(change)

    @strawberry.mutation(description="Choose (or clear, with null) the dataset an algorithm step trains on.")
    async def set_pipeline_training_data(
        self,
        info: strawberry.Info,
        pipeline_id: strawberry.ID,
        step_id: strawberry.ID,
        dataset_listing_id: strawberry.ID | None = None,
    ) -> Pipeline:
        view = await pipelines_of(info).set_training_data(
            info.context.actor,
            str(pipeline_id),
            str(step_id),
            str(dataset_listing_id) if dataset_listing_id is not None else None,
        )
        return Pipeline.of(view)

    @strawberry.mutation(
        description="List a runnable pipeline in the catalog as a listing of kind PIPELINE (once). Its "
        "formats, suggested resources (max over steps), latency and accuracy (medians of runs) are derived."
    )
    async def publish_pipeline(
        self,
        info: strawberry.Info,
        pipeline_id: strawberry.ID,
        category: str | None = None,
        name: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        visibility: Visibility = VisibilityValue.PUBLIC,
    ) -> Listing:
        view = await publish_pipeline(
            pipelines_of(info),
            info.context.catalog.listings,
            info.context.actor,
            str(pipeline_id),
            name=name,
            category=category,
            description=description,
            tags=tags,
            visibility=VisibilityValue(visibility).value,
        )
        return Listing.from_view(view)

    @strawberry.mutation(
        description="Delete one of the caller's pipelines and its steps. A pipeline published as a listing "
        "is refused with CONFLICT while that listing exists, since the listing runs from these steps: "
        "delete that listing first (deleting the listing leaves the pipeline)."
    )
    async def delete_pipeline(self, info: strawberry.Info, id: strawberry.ID) -> bool:
        await pipelines_of(info).delete(info.context.actor, str(id))
        return True
