"""Training a pipeline as one job: each algorithm step trained on its chosen data, then the post-training
pipeline derived (``catalog.pipelines.training``), whose steps are all runnable models.

Each step trains as a job of its own — a TRAINING row on the algorithm, marked with the pipeline job
(``inputs.pipeline_job_id``) and run inline by the worker holding the pipeline job — so it gets exactly
what ``runJob`` training gets (sandbox, held-out accuracy, a private model listing, usage of algorithm and
dataset) and the owner can read each step's job and logs. The pipeline job's progress names the step
being trained. A step whose training fails leaves the pipeline job FAILED naming the step, with no
result; models trained before it stay attached to their steps, so a retry trains only what is left.

Steps train in chain order, and each learns from what the pipeline will really hand it: its dataset's
inputs are first run through the steps in front of it (from the first that reads the dataset's format;
``PipelineTraining.feed_plan``), a trained step in front running its new model, each example keeping its
target (``training_feed``). So a step is held out and scored through the same chain, and a step trained
again makes the trainable steps fed through it train again (``PipelineTraining.plan``). Feeding happens
before the step's job exists: a step in front that fails every example (or whose sandbox fails) fails
the pipeline job naming both steps and writes no job and no model for the step.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from catalog.actors import Actor
from catalog.enums import JobStatus, JobTask
from catalog.job_output_retention import FED_EXAMPLES_KEY
from catalog.pipelines.training import PipelineTraining, TrainingTask
from catalog.pipelines.views import step_label
from executor.allocation import allocate
from executor.datasets import dataset_digest
from executor.pipeline_jobs import account_quota, job_owner, queue_staged_job
from executor.training_feed import FedExamples, feed_examples
from infra.errors import BadInput, MlrepoError, Unauthenticated
from infra.tables import Job

# A step's job a retry takes over: done, or one a worker may still run (the reconciler re-queues it).
REUSABLE_STEP_STATUSES = (JobStatus.SUCCEEDED.value, JobStatus.RUNNING.value, JobStatus.QUEUED.value)

if TYPE_CHECKING:
    from executor.allocation import Quota
    from executor.job_views import JobView
    from executor.jobs import JobService


class StepTrainingFailed(MlrepoError):
    """One algorithm step did not train: the pipeline job fails and the message names the step."""

    code = "STEP_FAILED"


async def submit_pipeline_training(
    jobs: JobService, actor: Actor, pipeline_id: str, resources: dict[str, Any] | None = None
) -> str:
    """Queue the training of one of the caller's pipelines; returns the job id.

    Refused before a job exists: a pipeline with nothing to train, a step without training data or
    whose data holds a record that is not an example with its target, a quota too small for the most
    demanding step's training.
    """
    if actor.account_id is None:
        raise Unauthenticated("sign in to run jobs")
    view = await jobs.catalog.pipelines.get(actor, pipeline_id)
    if not any(step.needs_training for step in view.steps):
        raise BadInput(f"pipeline {view.name!r} has no step to train; run it as it is", field="pipelineId")
    tasks = await PipelineTraining(jobs.catalog.pipelines).plan(actor, pipeline_id)
    for task in tasks:  # a dataset declaring labels may still hold records without: refused now
        await jobs.scan_training_data(
            await dataset_digest(jobs.db, task.dataset_listing_id),
            f"the training data of {task.algorithm_name!r}",
            "pipelineId",
            step_id=task.step_id,
        )
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
    owner, quota = await job_owner(jobs, row)
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
        await jobs.report_progress(row, {**progress, "stage": index, "state": "training"})
        label = step_label(task.position, task.algorithm_name)  # its place in the pipeline
        feeding = _Feeding(
            training, owner, quota, staging / f"feed-{index}", label, {**progress, "stage": index}
        )
        step_job = await _train_step_as_job(jobs, row, owner, task, feeding)
        if step_job.status != JobStatus.SUCCEEDED or not step_job.result:
            raise StepTrainingFailed(
                f"{label} did not train (job {step_job.id}): {step_job.error}",
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
                "fed_through": step_job.result.get("fed_through", []),
                "fed_dropped": step_job.result.get("fed_dropped", 0),
            }
        )
        await jobs.report_progress(row, {**progress, "stage": index + 1, "state": "trained"})
        return step_job.result["trained_listing_id"]

    try:
        post_training = await training.train(owner, row.pipeline_id, train_step)
    except MlrepoError as exc:
        await jobs.store(row, metrics={"steps": trained})
        return JobStatus.FAILED, exc.message
    await jobs.store(
        row,
        result={"post_training_pipeline_id": post_training.id, "trained_steps": trained},
        metrics={"steps": trained},
    )
    return JobStatus.SUCCEEDED, None


@dataclass(frozen=True, slots=True)
class _Feeding:
    """What feeding a step's training data through the steps in front of it needs."""

    training: PipelineTraining
    owner: Actor
    quota: Quota
    staging: Path
    label: str  # the trained step, as errors name it
    progress: dict[str, Any]  # the pipeline job's progress while the step is fed

    async def examples(self, jobs: JobService, parent: Job, task: TrainingTask) -> FedExamples | None:
        """The step's examples as the steps in front hand them over; None when the data enters at the
        step (``feed_plan``). A failure names the trained step and, in its reason, the step in front."""
        try:
            plan = await self.training.feed_plan(self.owner, task)
            if plan is None:
                return None
            await jobs.report_progress(parent, {**self.progress, "state": "feeding"})
            return await feed_examples(jobs, parent, self.quota, plan, task.dataset_listing_id, self.staging)
        except MlrepoError as exc:
            raise StepTrainingFailed(
                f"{self.label} could not be fed its training data through the steps before it: {exc.message}",
                step_id=task.step_id,
            ) from exc


async def _train_step_as_job(
    jobs: JobService, parent: Job, owner: Actor, task: TrainingTask, feeding: _Feeding
) -> JobView:
    """One step's training as its own job row, run here and now; returns that job once final.

    A retried pipeline job takes the step's job of its earlier attempt when that one succeeded or may
    still (its worker died with the pipeline's: the reconciler re-queues it too): training the step
    again in a new job would leave the first model an orphan. A new job's examples are fed through the
    steps in front first (``training_feed``), before the job exists: a feed that fails leaves nothing."""
    job_id = await _earlier_step_job(jobs, parent, task)
    if job_id is None:
        job_id = await _new_step_job(jobs, parent, task, await feeding.examples(jobs, parent, task))
    try:
        await jobs.run(job_id)  # "skipped" when it is not QUEUED (finished, or another worker has it)
    except asyncio.CancelledError:  # the pipeline job was cancelled (or this worker is stopping)
        await jobs.finish(job_id, JobStatus.CANCELLED, error="the pipeline training job was stopped")
        raise
    final = None
    async for final in jobs.watch(owner, job_id):  # noqa: B007 - the last view is the outcome
        pass
    assert final is not None
    return final


async def _earlier_step_job(jobs: JobService, parent: Job, task: TrainingTask) -> str | None:
    async with jobs.db.session() as session:
        rows = (
            await session.scalars(
                select(Job)
                .where(
                    Job.owner_id == parent.owner_id,
                    Job.listing_id == task.algorithm_listing_id,
                    Job.task == JobTask.TRAINING.value,
                    Job.status.in_(REUSABLE_STEP_STATUSES),
                )
                .order_by(Job.created_at.desc())
            )
        ).all()
    mine = {"pipeline_job_id": parent.id, "pipeline_step_id": task.step_id}
    return next((row.id for row in rows if mine.items() <= (row.inputs or {}).items()), None)


async def _new_step_job(jobs: JobService, parent: Job, task: TrainingTask, fed: FedExamples | None) -> str:
    """A QUEUED training job of the step. Its row names the stored fed examples (``FED_EXAMPLES_KEY``,
    read instead of the dataset, which still counts the use) and their count, never the examples
    themselves: a row of up to the dataset's 256 MiB slowed every listing of jobs and every load of the
    row. Otherwise the job reads the dataset itself."""
    inputs: dict[str, Any] = {"records": []}
    if fed is not None:
        inputs = {
            "records": [],
            FED_EXAMPLES_KEY: fed.digest,
            "fed_examples": fed.count,
            "fed_through": fed.through,
            "fed_dropped": fed.dropped,
            **({"fed_first_error": fed.first_error} if fed.first_error else {}),
        }
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
                **inputs,
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
    return row.id
