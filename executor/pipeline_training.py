"""Training a pipeline as one job: each algorithm step trained on its chosen data, then the post-training
pipeline derived (``catalog.pipelines.training``), whose steps are all runnable models.

Each step trains as a job of its own — a TRAINING row on the algorithm, marked with the pipeline job
(``inputs.pipeline_job_id``) and run inline by the worker holding the pipeline job — so it gets exactly
what ``runJob`` training gets (sandbox, held-out accuracy, a private model listing, usage of algorithm and
dataset) and the owner can read each step's job and logs. The pipeline job's progress names the step
being trained. A step whose training fails leaves the pipeline job FAILED naming the step, with no
result; models trained before it stay attached to their steps, so a retry trains only what is left.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog.actors import Actor
from catalog.enums import JobStatus, JobTask
from catalog.pipelines.training import PipelineTraining, TrainingTask
from executor.allocation import allocate
from executor.pipeline_jobs import account_quota, job_owner, queue_staged_job
from infra.errors import BadInput, MlrepoError, Unauthenticated
from infra.tables import Job

if TYPE_CHECKING:
    from executor.jobs import JobService, JobView


class StepTrainingFailed(MlrepoError):
    """One algorithm step did not train: the pipeline job fails and the message names the step."""

    code = "STEP_FAILED"


async def submit_pipeline_training(
    jobs: JobService, actor: Actor, pipeline_id: str, resources: dict[str, Any] | None = None
) -> str:
    """Queue the training of one of the caller's pipelines; returns the job id.

    Refused before a job exists: a pipeline with nothing to train, a step without training data, a
    quota too small for the most demanding step's training.
    """
    if actor.account_id is None:
        raise Unauthenticated("sign in to run jobs")
    view = await jobs.catalog.pipelines.get(actor, pipeline_id)
    if not any(step.needs_training for step in view.steps):
        raise BadInput(f"pipeline {view.name!r} has no step to train; run it as it is", field="pipelineId")
    tasks = await PipelineTraining(jobs.catalog.pipelines).plan(actor, pipeline_id)
    return await queue_staged_job(
        jobs,
        actor.account_id,
        [task.resources for task in tasks],
        resources,
        task=JobTask.TRAINING,
        pipeline_id=view.id,
        listing_id=None,
        inputs={},
    )


async def run_pipeline_training_row(
    jobs: JobService, row: Job, staging: Path
) -> tuple[JobStatus, str | None]:
    """The worker side of a claimed pipeline training job; returns its final status and error."""
    owner, _ = await job_owner(jobs, row)
    assert row.pipeline_id is not None
    training = PipelineTraining(jobs.catalog.pipelines)
    try:
        stages = len(await training.plan(owner, row.pipeline_id))
    except MlrepoError as exc:  # the pipeline changed (or went) since it was queued
        return JobStatus.FAILED, f"the pipeline can no longer be trained: {exc.message}"
    trained: list[dict[str, Any]] = []

    async def train_step(task: TrainingTask) -> str:
        index = len(trained)
        progress = {"stages": stages, "step_id": task.step_id, "step": task.algorithm_name}
        await jobs.report_progress(row.id, {**progress, "stage": index, "state": "training"})
        step_job = await _train_step_as_job(jobs, row, owner, task)
        if step_job.status != JobStatus.SUCCEEDED or not step_job.result:
            raise StepTrainingFailed(
                f"step {index + 1} {task.algorithm_name!r} did not train "
                f"(job {step_job.id}): {step_job.error}",
                step_id=task.step_id,
            )
        trained.append(
            {
                "step_id": task.step_id,
                "algorithm_listing_id": task.algorithm_listing_id,
                "algorithm": task.algorithm_name,
                "dataset_listing_id": task.dataset_listing_id,
                "job_id": step_job.id,
                "model_listing_id": step_job.result["trained_listing_id"],
                "accuracy": step_job.result.get("accuracy"),
                "training_s": step_job.metrics.get("training_s"),
            }
        )
        await jobs.report_progress(row.id, {**progress, "stage": index + 1, "state": "trained"})
        return step_job.result["trained_listing_id"]

    try:
        post_training = await training.train(owner, row.pipeline_id, train_step)
    except MlrepoError as exc:
        await jobs.store(row.id, metrics={"steps": trained})
        return JobStatus.FAILED, exc.message
    await jobs.store(
        row.id,
        result={"post_training_pipeline_id": post_training.id, "trained_steps": trained},
        metrics={"steps": trained},
    )
    return JobStatus.SUCCEEDED, None


async def _train_step_as_job(jobs: JobService, parent: Job, owner: Actor, task: TrainingTask) -> JobView:
    """One step's training as its own job row, run here and now; returns that job once final."""
    async with jobs.db.session() as session:
        quota = await account_quota(session, parent.owner_id)
        allocation = allocate(task.resources, None, quota)
        row = Job(
            owner_id=parent.owner_id,
            listing_id=task.algorithm_listing_id,
            task=JobTask.TRAINING.value,
            status=JobStatus.QUEUED.value,
            resource_class=allocation.resource_class,
            resources=allocation.as_dict(),
            inputs={
                "records": [],
                "dataset_listing_id": task.dataset_listing_id,
                "pipeline_job_id": parent.id,
                "pipeline_step_id": task.step_id,
            },
            progress={},
            metrics={},
            logs="",
            attempts=0,
        )
        session.add(row)
    try:
        await jobs.run(row.id)  # "skipped" when the reconciler handed it to another worker first
    except asyncio.CancelledError:  # the pipeline job was cancelled (or this worker is stopping)
        await jobs.finish(row.id, JobStatus.CANCELLED, error="the pipeline training job was stopped")
        raise
    final = None
    async for final in jobs.watch(owner, row.id):  # noqa: B007 - the last view is the outcome
        pass
    assert final is not None
    return final
