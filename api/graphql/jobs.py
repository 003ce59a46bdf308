"""GraphQL for jobs: run a listing or a pipeline (inference or training), watch it, cancel it.

Resolvers only translate; ``executor.jobs.JobService`` checks access, allocates resources and queues the
job (arq per resource class when ``MLREPO_REDIS_URL`` is set, otherwise a task of this process). The
service lives in ``services.extras["jobs"]``; ``Subscription.jobStatus`` streams from Redis pub/sub (or the
in-process bus) and re-reads the job row on every event, so what it shows is always the database's truth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import strawberry
from strawberry.file_uploads import Upload
from strawberry.scalars import JSON

from api.graphql.convert import errors_in_graphql_terms, given_fields
from api.graphql.types import PageInfo, ResourcesInput
from catalog.enums import JobStatus as JobStatusValue
from catalog.enums import JobTask as JobTaskValue
from catalog.gc_schedule import collect_garbage_on_schedule
from executor.datasets import MAX_DATA_BYTES, parse_json_lines
from executor.events import job_events_for
from executor.job_queues import ArqJobQueue
from executor.job_views import JobView
from executor.jobs import JobService
from infra.errors import BadInput

EXTRAS_KEY = "jobs"
# The worker's periodic duties, run by an API process without Redis (named so tests can find them).
RECONCILE_TASK = "mlrepo:reconcile-jobs"
GC_TASK = "mlrepo:artifact-gc"
logger = logging.getLogger("mlrepo.api")

JobStatus = strawberry.enum(JobStatusValue, name="JobStatus")
JobTask = strawberry.enum(JobTaskValue, name="JobTask")


@asynccontextmanager
async def lifespan(services: Any) -> AsyncIterator[None]:
    """One JobService per API process; without Redis it runs the jobs too (and resumes unfinished ones)."""
    settings = services.settings
    queue = ArqJobQueue(settings.redis_url) if settings.redis_url else None
    service = JobService(settings, services.catalog, events=job_events_for(settings.redis_url), queue=queue)
    services.extras[EXTRAS_KEY] = service
    # Without Redis there is no worker: this process resumes unfinished jobs, now and periodically, and
    # collects garbage (expiring old job outputs) on the worker's schedule.
    chores = []
    if queue is None:
        chores = [
            asyncio.create_task(_reconcile_forever(service), name=RECONCILE_TASK),
            asyncio.create_task(collect_garbage_on_schedule(settings, services.catalog.db), name=GC_TASK),
        ]
    try:
        yield
    finally:
        for chore in chores:
            chore.cancel()
        await asyncio.gather(*chores, return_exceptions=True)
        services.extras.pop(EXTRAS_KEY, None)
        await service.queue.close()
        await service.events.close()


async def _reconcile_forever(service: JobService) -> None:
    while True:
        try:
            await service.reconcile()
        except Exception:  # a database hiccup must not end the loop; the next round retries
            logger.warning("job reconciliation failed", exc_info=True)
        await asyncio.sleep(service.settings.job_stale_after_s)


def jobs_of(info: strawberry.Info) -> JobService:
    return info.context.services.extras[EXTRAS_KEY]


@strawberry.type(description="How far a running job is: scoring calls (batches) and records done.")
class JobProgress:
    batches_done: int
    records_done: int
    records_total: int
    failed_calls: int
    details: JSON = strawberry.field(description="Everything recorded, e.g. the current stage of a pipeline.")


@strawberry.type(description="One record's outcome: its output, or its error (and, in a pipeline, the step).")
class JobOutput:
    index: int = strawberry.field(description="The record's place among the job's inputs (from 0).")
    output: JSON | None
    error: str | None
    step_id: strawberry.ID | None = strawberry.field(description="The pipeline step the record failed at.")
    step: str | None
    notebook: JSON | None = strawberry.field(
        description="For a notebook listing: the record's executed notebook (nbformat 4, with outputs)."
    )

    @classmethod
    def of(cls, index: int, record: dict[str, Any]) -> JobOutput:
        step_id = record.get("step_id")
        return cls(
            index=index,
            output=record.get("output"),
            error=record.get("error"),
            step_id=strawberry.ID(step_id) if step_id else None,
            step=record.get("step"),
            notebook=record.get("notebook"),
        )


@strawberry.type
class JobOutputEdge:
    node: JobOutput
    cursor: str


@strawberry.type
class JobOutputConnection:
    edges: list[JobOutputEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type(description="An inference or training run. Results and logs are shown to its owner only.")
class Job:
    id: strawberry.ID
    listing_id: strawberry.ID | None
    pipeline_id: strawberry.ID | None
    task: JobTask
    status: JobStatus
    resource_class: str
    resources: JSON
    progress: JobProgress | None
    metrics: JSON
    result: JSON | None = strawberry.field(
        description="A summary: succeeded and failed record counts for inference (each record's outcome "
        "is in outputs); trained_listing_id for training; post_training_pipeline_id for a pipeline's "
        "training. A pipeline run's metrics hold one entry per step (steps)."
    )
    outputs_count: int = strawberry.field(
        description="How many per-record outputs the job has (0 until it is final)."
    )
    outputs_expired_at: datetime | None = strawberry.field(
        description="When the outputs were dropped, MLREPO_JOB_OUTPUT_RETENTION_DAYS after the job finished "
        "(outputs then answers GONE; status, result and metrics stay)."
    )
    error: str | None
    error_code: str | None = strawberry.field(
        description="Why the service itself ended the job, for clients to branch on: "
        "JOB_DEADLINE_EXCEEDED (status TIMED_OUT) when the run passed MLREPO_JOB_MAX_DURATION_S; null "
        "otherwise (a job whose every call hit the producer's per-call timeout is TIMED_OUT with no code)."
    )
    logs: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @strawberry.field(
        description="Per-record outputs of a final inference job, in input order, with cursor pagination "
        "(first: 1..MLREPO_JOB_OUTPUTS_PAGE_SIZE; pass pageInfo.endCursor as after); GONE once "
        "outputsExpiredAt is set."
    )
    async def outputs(
        self, info: strawberry.Info, first: int = 100, after: str | None = None
    ) -> JobOutputConnection:
        jobs, job_id = jobs_of(info), str(self.id)
        page = await jobs.outputs(info.context.actor, job_id, first, after)
        edges = [
            JobOutputEdge(
                node=JobOutput.of(page.start.index + i, record),
                cursor=jobs.outputs_cursor(job_id, page.cursor_after(i)),
            )
            for i, record in enumerate(page.records)
        ]
        return JobOutputConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page, end_cursor=jobs.outputs_cursor(job_id, page.end)
            ),
            total_count=page.total,
        )

    @classmethod
    def of(cls, view: JobView) -> Job:
        progress = view.progress
        return cls(
            id=strawberry.ID(view.id),
            listing_id=strawberry.ID(view.listing_id) if view.listing_id else None,
            pipeline_id=strawberry.ID(view.pipeline_id) if view.pipeline_id else None,
            task=JobTaskValue(view.task),
            status=JobStatusValue(view.status),
            resource_class=view.resource_class,
            resources=view.resources,
            progress=JobProgress(
                batches_done=progress.get("batches_done", 0),
                records_done=progress.get("records_done", 0),
                records_total=progress.get("records_total", 0),
                failed_calls=progress.get("failed_calls", 0),
                details=progress,
            )
            if progress
            else None,
            metrics=view.metrics,
            result=view.result,
            outputs_count=view.outputs_count or 0,
            outputs_expired_at=view.outputs_expired_at,
            error=view.error,
            error_code=view.error_code,
            logs=view.logs,
            attempts=view.attempts,
            created_at=view.created_at,
            started_at=view.started_at,
            finished_at=view.finished_at,
        )


@strawberry.input(description="What to run: a listing or one of your pipelines, a task, and its inputs.")
class RunJobInput:
    listing_id: strawberry.ID | None = strawberry.field(
        default=None, description="A listing (a pipeline listing runs stage by stage)."
    )
    pipeline_id: strawberry.ID | None = strawberry.field(
        default=None, description="One of your pipelines: each stage in its own sandbox and allocation."
    )
    task: JobTask = JobTaskValue.INFERENCE
    records: JSON | None = strawberry.field(
        default=None, description="Inference inputs: a JSON list, one per record."
    )
    dataset_listing_id: strawberry.ID | None = strawberry.field(
        default=None, description="A dataset listing: training data, or inputs to score (then any records)."
    )
    resources: ResourcesInput | None = strawberry.field(
        default=None, description="Ask for specific resources (within your quota); default: the listing's."
    )
    search_id: str | None = strawberry.field(
        default=None, description="The search the listing was found through: the run counts as its selection."
    )


@strawberry.type
class JobEdge:
    node: Job
    cursor: str


@strawberry.type
class JobConnection:
    edges: list[JobEdge]
    page_info: PageInfo


@strawberry.type
class Query:
    @strawberry.field(description="One of your jobs, with its status, progress and (when done) results.")
    async def job(self, info: strawberry.Info, id: strawberry.ID) -> Job:
        return Job.of(await jobs_of(info).get(info.context.actor, str(id)))

    @strawberry.field(
        description="Your jobs, newest first, with cursor pagination (first: 1..100); optionally only "
        "those in the given statuses or on one listing."
    )
    async def my_jobs(
        self,
        info: strawberry.Info,
        status: list[JobStatus] | None = None,
        listing_id: strawberry.ID | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> JobConnection:
        page = await jobs_of(info).list_mine(
            info.context.actor,
            statuses=status,
            listing_id=str(listing_id) if listing_id else None,
            first=first,
            after=after,
            max_page_size=info.context.settings.max_page_size,
        )
        return JobConnection(
            edges=[JobEdge(node=Job.of(v), cursor=c) for v, c in zip(page.items, page.cursors, strict=True)],
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Run inference or training on a listing in a sandboxed copy. Inputs: input.records, "
        "an uploaded JSON-lines file (file), or input.datasetListingId."
    )
    async def run_job(self, info: strawberry.Info, input: RunJobInput, file: Upload | None = None) -> Job:
        records = input.records
        if file is not None:
            if records is not None and not isinstance(records, list):
                raise BadInput(
                    "records must be a JSON list of inputs (the file's lines are added)", field="records"
                )
            data = await asyncio.to_thread(file.file.read, MAX_DATA_BYTES + 1)
            records = [*(records or []), *parse_json_lines(data, "the uploaded file", field="file")]
        search_id = input.search_id
        if search_id is not None:  # checked before anything is queued: a bad id leaves no job behind
            if input.listing_id is None:
                raise BadInput("searchId goes with the listingId that search found", field="searchId")
            await info.context.catalog.demand.require_search(search_id, info.context.actor)
        with errors_in_graphql_terms():
            view = await jobs_of(info).submit(
                info.context.actor,
                str(input.listing_id) if input.listing_id is not None else None,
                JobTaskValue(input.task).value,
                records=records,
                resources=given_fields(input.resources) if input.resources else None,
                dataset_listing_id=str(input.dataset_listing_id) if input.dataset_listing_id else None,
                pipeline_id=str(input.pipeline_id) if input.pipeline_id is not None else None,
            )
        if search_id is not None:
            await info.context.catalog.search.record_selection(
                search_id, str(input.listing_id), info.context.actor
            )
        return Job.of(view)

    @strawberry.mutation(
        description="Train a pipeline as a job: each algorithm step on its chosen training data (one "
        "training job per step), then the post-training pipeline is derived — result."
        "post_training_pipeline_id, whose steps are all runnable models."
    )
    async def train_pipeline(
        self, info: strawberry.Info, pipeline_id: strawberry.ID, resources: ResourcesInput | None = None
    ) -> Job:
        with errors_in_graphql_terms():
            view = await jobs_of(info).submit(
                info.context.actor,
                task=JobTaskValue.TRAINING.value,
                resources=given_fields(resources) if resources else None,
                pipeline_id=str(pipeline_id),
            )
        return Job.of(view)

    @strawberry.mutation(description="Cancel a queued or running job of yours (idempotent).")
    async def cancel_job(self, info: strawberry.Info, id: strawberry.ID) -> Job:
        return Job.of(await jobs_of(info).cancel(info.context.actor, str(id)))


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The job now, then every change (status, progress) until it is final."
    )
    async def job_status(self, info: strawberry.Info, id: strawberry.ID) -> AsyncIterator[Job]:
        async with info.context.subscription_slot():
            async for view in jobs_of(info).watch(info.context.actor, str(id)):
                yield Job.of(view)
