"""Pipeline jobs: ``runJob`` on a pipeline (or a pipeline listing), run stage by stage by the executor.

The catalog side (``catalog.pipelines``) decides *what* runs: the per-step plan (nested pipelines
expanded, trained models in place of their algorithms) and the hand-over contract between steps
(``run_pipeline_job``: each output projected onto its declared schema and checked against the next
step's input; a step where every record fails makes the job FAILED, naming the step). This module is the
executor side: each stage runs the step's published version in a fresh sandbox copy with *its own*
allocation (from that listing's suggested resources, bounded by the owner's quota) and the producer's
timeout, through the same batched inference path as a single-listing job; stage progress is stored on
the job row and published for ``Subscription.jobStatus``.

Records are streamed like a single-listing job's: the dataset's (read from its stored file, pinned at
submission) then those given inline, ``job_max_batch_records`` at a time. Each chunk goes through every
stage (conditioning steps included) and its outputs are written out before the next chunk is read, so
a worker's memory does not grow with the dataset. Each step's sandbox package is prepared once per job,
and what batching learnt for a step carries from one chunk to the next.

The job is queued on the resource class of its most demanding step (a pipeline with a GPU step waits
for a GPU worker); the classes of every stage are recorded on the row (``resources.stages``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog.actors import Actor
from catalog.enums import JobStatus, JobTask
from catalog.pipelines.running import (
    RunPlan,
    StageProgress,
    StepPlan,
    max_resources,
    resource_class_for,
    stream_pipeline_job,
)
from executor.allocation import Quota, allocate
from executor.datasets import DatasetInput, check_inline_count, job_input_chunks
from executor.inference import InferencePlan, run_inference
from executor.job_outputs import OutputsWriter
from executor.output_filter import OutputFilter
from executor.packages import prepare_runnable
from infra.errors import BadInput, Unauthenticated
from infra.tables import Account, Job

if TYPE_CHECKING:
    from executor.batching import BatchCarry
    from executor.contract import RecordOutcome
    from executor.jobs import JobService
    from executor.packages import Runnable


async def submit_pipeline(
    jobs: JobService,
    actor: Actor,
    records: Sequence[Any] | None,
    *,
    pipeline_id: str | None = None,
    listing_id: str | None = None,
    resources: dict[str, Any] | None = None,
    dataset: DatasetInput | None = None,
) -> str:
    """Queue an inference run of one of the caller's pipelines, or of a visible pipeline listing, on
    ``records`` and/or a ``dataset``'s records (any number: they are streamed when the job runs).

    Everything that can be refused is refused here, before a job exists: a pipeline that cannot run
    (open connections, untrained steps), inputs that do not fit its first step (a dataset's are read
    through once), a quota too small for its most demanding step. Returns the job id.
    """
    if actor.account_id is None:
        raise Unauthenticated("sign in to run jobs")
    if (pipeline_id is None) == (listing_id is None):
        raise BadInput("give either a pipeline id or a pipeline listing id")
    if records is None and dataset is not None:
        records = []
    if not isinstance(records, list | tuple) or not (records or dataset is not None):
        raise BadInput("a pipeline run needs records: a non-empty list of inputs", field="records")
    check_inline_count(jobs.settings, len(records))
    pipelines = jobs.catalog.pipelines
    if pipeline_id is not None:
        plan = await pipelines.plan_run(actor, pipeline_id)
    else:
        assert listing_id is not None
        plan = await pipelines.plan_listing_run(actor, listing_id)
    plan.check_inputs(records)  # the plan refused a step without code already (``runnability``)
    inputs: dict[str, Any] = {"records": list(records), "via_listing": listing_id is not None}
    if dataset is not None:
        count = await jobs.scan_dataset(dataset.digest, plan.steps[0].input_schema)
        if count + len(records) == 0:
            raise BadInput("the dataset has no records to run the pipeline on", field="datasetListingId")
        inputs |= dataset.job_inputs(count)
    return await queue_staged_job(
        jobs,
        actor.account_id,
        [step.resources for step in plan.steps],
        resources,
        task=JobTask.INFERENCE,
        pipeline_id=plan.pipeline_id,
        listing_id=listing_id,
        inputs=inputs,
    )


async def queue_staged_job(
    jobs: JobService,
    owner_id: str,
    stages: Sequence[dict[str, Any]],
    requested: dict[str, Any] | None,
    *,
    task: JobTask,
    pipeline_id: str,
    listing_id: str | None,
    inputs: dict[str, Any],
) -> str:
    """Queue a job of several stages run one after another (a pipeline's steps, or its trainings).

    It is allocated for its most demanding stage and queued on that stage's resource class; each stage
    is allocated against the owner's quota as a job of its own would be (so a request the quota refuses
    is refused now, not midway). Returns the job id.
    """
    async with jobs.db.session() as session:
        quota = await account_quota(session, owner_id)
        allocation = allocate(max_resources(stages), requested, quota)
        for resources in stages:
            allocate(resources, None, quota)
        row = Job(
            owner_id=owner_id,
            listing_id=listing_id,
            pipeline_id=pipeline_id,
            task=task.value,
            status=JobStatus.QUEUED.value,
            resource_class=allocation.resource_class,
            resources={**allocation.as_dict(), "stages": [resource_class_for(r) for r in stages]},
            inputs=inputs,
            progress={"stage": 0, "stages": len(stages)},
            metrics={},
            logs="",
            attempts=0,
        )
        session.add(row)
    await jobs.deliver(row.id, row.resource_class, 1)
    return row.id


async def run_pipeline_row(jobs: JobService, row: Job, staging: Path) -> tuple[JobStatus, str | None]:
    """The worker side of a claimed (RUNNING) pipeline job; returns its final status and error."""
    owner, quota = await job_owner(jobs, row)
    pipelines = jobs.catalog.pipelines
    via_listing = bool((row.inputs or {}).get("via_listing")) and row.listing_id is not None
    try:
        if via_listing:
            assert row.listing_id is not None
            plan = await pipelines.plan_listing_run(owner, row.listing_id)
        else:
            assert row.pipeline_id is not None
            plan = await pipelines.plan_run(owner, row.pipeline_id)
    except BadInput as exc:  # the pipeline changed since it was queued
        return JobStatus.FAILED, f"the pipeline can no longer run: {exc.message}"
    total, chunks = await job_input_chunks(jobs.settings, row.inputs or {}, staging / "dataset")
    writer = OutputsWriter(staging / "outputs")

    async def write(records: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(writer.extend, records)

    try:
        verdict = await stream_pipeline_job(
            plan,
            chunks,
            step_runner(jobs, row, plan, quota, staging),
            write,
            on_stage=_stage_hook(jobs, row, total),
            usage=jobs.catalog.usage,
            account_id=row.owner_id,
        )
        if verdict.result is not None:  # the written records become the job's outputs
            await jobs.keep_written_outputs(row, writer)
        else:  # a failed run shows nothing partial
            writer.discard()
    except BaseException:
        writer.discard()
        raise
    await jobs.store(row, result=verdict.result, metrics=verdict.metrics)
    return JobStatus(verdict.status), verdict.error


def step_runner(jobs: JobService, row: Job, plan: RunPlan, quota: Quota, staging: Path):
    """Runs a step on one chunk. Its package is prepared (exported, unpacked, containerized) on its first
    chunk only, and batching's state carries over to the step's next chunk (batch size, failures)."""
    prepared: dict[int, tuple[Runnable, InferencePlan]] = {}
    carries: dict[int, BatchCarry | None] = {}

    async def run_step(step: StepPlan, inputs: list[Any]) -> list[RecordOutcome]:
        if step.index not in prepared:
            prepared[step.index] = await _prepare_step(jobs, row, step, quota, staging)
        runnable, inference = prepared[step.index]
        outcome = await run_inference(runnable.runtime, inference, inputs, carry=carries.get(step.index))
        carries[step.index] = outcome.carry
        return outcome.results

    return run_step


async def _prepare_step(
    jobs: JobService, row: Job, step: StepPlan, quota: Quota, staging: Path
) -> tuple[Runnable, InferencePlan]:
    async with jobs.db.session() as session:
        version = await jobs.latest_version(session, step.listing_id)
    if version is None:
        raise BadInput(f"{step.listing_name!r} has no published version to run")
    step_dir = staging / f"stage-{step.index}"
    step_dir.mkdir(parents=True, exist_ok=True)
    runnable = await prepare_runnable(jobs.settings, jobs.selector, version, step_dir)
    allocation = allocate(step.resources, None, quota)
    inference = InferencePlan(
        package=runnable.package,
        limits=jobs.limits_for(allocation, step.timeout_s),
        output_filter=OutputFilter.for_listing(step.output_format, step.output_schema),
        max_batch=jobs.settings.job_max_batch_records,
        labels=(("mlrepo.job", row.id), ("mlrepo.stage", str(step.index))),
    )
    return runnable, inference


def _stage_hook(jobs: JobService, row: Job, total: int):
    async def on_stage(progress: StageProgress) -> None:
        await jobs.report_progress(
            row,
            {
                "stage": progress.stage + (1 if progress.state == "done" else 0),
                "stages": progress.stages,
                "step_id": progress.step_id,
                "step": progress.listing_name,
                "state": progress.state,
                "records_in": progress.records_in,
                "records_ok": progress.records_ok,
                "records_done": progress.records_done,
                "records_total": total,
            },
        )

    return on_stage


async def job_owner(jobs: JobService, row: Job) -> tuple[Actor, Quota]:
    """Who a job runs as (its plan is re-read with the owner's visibility) and the quota bounding it."""
    async with jobs.db.session() as session:
        account = await session.get(Account, row.owner_id)
        if account is None:
            raise Unauthenticated("the job's account no longer exists")
        actor = Actor(account_id=account.id, role=account.role, name=account.name)
        return actor, Quota(account.quota_cpu, account.quota_memory_mb, account.quota_gpu)


async def account_quota(session: Any, account_id: str) -> Quota:
    """The requester's quota, which bounds every stage's allocation."""
    account = await session.get(Account, account_id)
    if account is None:
        raise Unauthenticated("your account no longer exists")
    return Quota(account.quota_cpu, account.quota_memory_mb, account.quota_gpu)
