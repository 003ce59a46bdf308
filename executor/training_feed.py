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

The dataset is read a chunk at a time from its stored file, and the fed examples (up to the dataset's
256 MiB, more once the steps in front have grown them) are kept neither in memory nor on the step job's
row: each chunk is appended to a JSON-lines spool as it comes out of the chain, and the spool is stored
in the artifact store (content-addressed, renamed into place whole).
The job row names the blob (``FED_EXAMPLES_KEY``) as an inference job names its dataset's stored file,
and the artifact gc keeps it while the job can run and for the job output retention after
(``catalog.artifact_gc``). The training job streams it into the sandbox's data directory
(``executor.training``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from catalog.pipelines.running import PipelineStream, RunPlan, report_step_metrics
from executor.datasets import DatasetReader, dataset_digest
from executor.pipeline_jobs import step_runner
from executor.training import example_of
from infra.artifacts import ArtifactStore
from infra.errors import BadInput

if TYPE_CHECKING:
    from executor.allocation import Quota
    from executor.jobs import JobService
    from infra.tables import Job


@dataclass(frozen=True, slots=True)
class FedExamples:
    """The training examples as the step will see them (stored, not held), and what feeding them cost."""

    digest: str  # the stored JSON lines of {"input", "target"}, in the dataset's order
    count: int  # how many examples it holds
    through: list[str]  # the names of the steps they went through
    dropped: int  # examples a step in front failed on
    first_error: str | None  # the first such failure, for the job's record


async def feed_examples(
    jobs: JobService, row: Job, quota: Quota, plan: RunPlan, dataset_listing_id: str, staging: Path
) -> FedExamples:
    """Run the dataset's example inputs through ``plan`` (on behalf of the pipeline job ``row``) and
    pair each output with its example's target, storing the pairs as an artifact. Raises ``StepFailed``
    naming the step in front that failed every example (or whose call failed); then nothing is stored."""
    digest = await dataset_digest(jobs.db, dataset_listing_id)
    stream = PipelineStream(plan, step_runner(jobs, row, plan, quota, staging))
    size = max(1, jobs.settings.job_max_batch_records)
    read = fed = 0
    first_error = None
    staging.mkdir(parents=True, exist_ok=True)
    spool_path = staging / "fed-examples.jsonl"
    try:
        with open(spool_path, "w", encoding="utf-8") as spool:
            reader = await asyncio.to_thread(DatasetReader, jobs.settings, digest, staging / "dataset")
            values = reader.values()
            while chunk := await asyncio.to_thread(_next_examples, values, size, read):
                read += len(chunk)
                outcomes = await stream.run_chunk([x for x, _ in chunk])
                pairs = []
                for (_, target), outcome in zip(chunk, outcomes, strict=True):
                    if "output" in outcome:
                        pairs.append({"input": outcome["output"], "target": target})
                    elif first_error is None:
                        first_error = outcome["error"]
                await asyncio.to_thread(_append_lines, spool, pairs)
                fed += len(pairs)
        if read == 0:
            raise BadInput("the training data holds no examples")
        stream.check()
        stored = await asyncio.to_thread(ArtifactStore.from_settings(jobs.settings).put_file, spool_path)
    finally:  # the steps in front ran for the owner either way: their listings count the use
        await report_step_metrics(jobs.catalog.usage, row.owner_id, stream.steps)
        spool_path.unlink(missing_ok=True)  # stored by then, or not to be: the store holds its own copy
        shutil.rmtree(staging / "dataset", ignore_errors=True)
    return FedExamples(
        digest=stored.digest,
        count=fed,
        through=[step.listing_name for step in plan.steps],
        dropped=read - fed,
        first_error=first_error,
    )


def _next_examples(values: Iterator[Any], size: int, before: int) -> list[tuple[Any, Any]]:
    """The next ``size`` examples of the dataset (``before`` read already, for the error's number): read
    a chunk at a time, so memory holds one chunk whatever the dataset's size."""
    return [
        example_of(item, number) for number, item in enumerate(itertools.islice(values, size), before + 1)
    ]


def _append_lines(spool: TextIO, values: list[dict[str, Any]]) -> None:
    spool.write("".join(json.dumps(value) + "\n" for value in values))
