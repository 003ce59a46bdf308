"""A pipeline step's training data, fed through the steps in front of it first.

A trainable step of a pipeline runs on what the steps before it hand it, not on the pipeline's raw
inputs: trained on a dataset's raw inputs, a vote model behind an upper-casing conditioner learnt
lowercase words, scored 1.0 on its held-out split of them, and then mislabelled every record the
pipeline gave it. So before the step trains, the dataset's inputs run through those steps
(``catalog.pipelines.training.PipelineTraining.feed_plan``) as a pipeline run does: each step in its own
sandbox copy, ``job_max_batch_records`` at a time, outputs checked against the next step's input. Each
example keeps its target by position: the step trains (and holds out, and is scored) on
``{"input": what the chain made of the example's input, "target": its target}``, so the held-out accuracy
is that of the chain up to and including the step.

An example whose input a step in front cannot take (the record's error) is dropped and counted; a step
that fails every record, or whose sandbox fails, stops the training before the step's job exists, so
nothing of the step is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog.pipelines.running import PipelineStream, RunPlan, report_step_metrics
from executor.datasets import dataset_lines
from executor.pipeline_jobs import step_runner
from executor.training import parse_examples

if TYPE_CHECKING:
    from executor.allocation import Quota
    from executor.jobs import JobService
    from infra.tables import Job


@dataclass(frozen=True, slots=True)
class FedExamples:
    """The training examples as the step will see them, and what feeding them cost."""

    examples: list[dict[str, Any]]  # {"input", "target"}, in the dataset's order
    through: list[str]  # the names of the steps they went through
    dropped: int  # examples a step in front failed on
    first_error: str | None  # the first such failure, for the job's record


async def feed_examples(
    jobs: JobService, row: Job, quota: Quota, plan: RunPlan, dataset_listing_id: str, staging: Path
) -> FedExamples:
    """Run the dataset's example inputs through ``plan`` (on behalf of the pipeline job ``row``) and
    pair each output with its example's target. Raises ``StepFailed`` naming the step in front that
    failed every example (or whose call failed)."""
    examples = parse_examples(await dataset_lines(jobs.settings, jobs.db, dataset_listing_id))
    stream = PipelineStream(plan, step_runner(jobs, row, plan, quota, staging))
    size = max(1, jobs.settings.job_max_batch_records)
    fed: list[dict[str, Any]] = []
    first_error = None
    try:
        for start in range(0, len(examples), size):
            chunk = examples[start : start + size]
            outcomes = await stream.run_chunk([x for x, _ in chunk])
            for (_, target), outcome in zip(chunk, outcomes, strict=True):
                if "output" in outcome:
                    fed.append({"input": outcome["output"], "target": target})
                elif first_error is None:
                    first_error = outcome["error"]
        stream.check()
    finally:  # the steps in front ran for the owner either way: their listings count the use
        await report_step_metrics(jobs.catalog.usage, row.owner_id, stream.steps)
    return FedExamples(
        examples=fed,
        through=[step.listing_name for step in plan.steps],
        dropped=len(examples) - len(fed),
        first_error=first_error,
    )
