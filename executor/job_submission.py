"""Submitting a job: check what the requester asks to run (the listing or pipeline, the task, inputs,
dataset and resources), write the QUEUED row and hand it to the queue.

Separate because this is where a bad request is refused, before any row is written (a pipeline's run
is checked and written by ``executor.pipeline_jobs`` and ``executor.pipeline_training``): the run loop
only meets jobs that passed these checks.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from catalog.actors import Actor
from catalog.enums import JobStatus, JobTask, ListingKind
from catalog.pipelines.runnability import NO_CODE, commands_of, serves_inference
from catalog.pipelines.store import carries_code
from executor.allocation import Quota, allocate
from executor.datasets import DatasetInput, DatasetReader, check_inline_count, dataset_digest
from executor.job_base import JobServiceParts
from executor.job_inputs import check_against_input_schema, input_check
from executor.job_views import JobView
from infra.errors import BadInput, Unauthenticated
from infra.tables import Account, Job

logger = logging.getLogger("mlrepo.executor")

RUNNABLE_KINDS = frozenset(
    {ListingKind.MODEL, ListingKind.ALGORITHM, ListingKind.PIPELINE, ListingKind.NOTEBOOK}
)


class JobSubmission(JobServiceParts):
    async def submit(
        self,
        actor: Actor,
        listing_id: str | None = None,
        task: str = JobTask.INFERENCE,
        records: Sequence[Any] | None = None,
        resources: dict[str, Any] | None = None,
        dataset_listing_id: str | None = None,
        *,
        pipeline_id: str | None = None,
    ) -> JobView:
        """Queue a run of a listing, or of one of the caller's pipelines (``pipeline_id``).

        A pipeline (or a pipeline listing) runs stage by stage (``executor.pipeline_jobs``); training a
        pipeline trains its algorithm steps and derives the post-training pipeline
        (``executor.pipeline_training``).
        """
        if actor.account_id is None:
            raise Unauthenticated("sign in to run jobs")
        task = _parse_task(task)
        if (listing_id is None) == (pipeline_id is None):
            raise BadInput("give either a listingId or a pipelineId", field="listingId")
        digest = None  # the stored file of a dataset whose records inference scores (then any inline)
        pinned: DatasetInput | None = None  # that dataset, for a pipeline
        if dataset_listing_id is not None:
            dataset = await self.catalog.listings.get(actor, dataset_listing_id)
            if dataset.kind != ListingKind.DATASET:
                raise BadInput("datasetListingId must name a dataset listing", field="datasetListingId")
            if task == JobTask.INFERENCE:
                if records is not None and not isinstance(records, list | tuple):
                    raise BadInput("records must be a list of inputs", field="records")
                digest = await dataset_digest(self.db, dataset_listing_id)
                pinned = DatasetInput(dataset_listing_id, digest)
        if pipeline_id is not None:
            return await self._submit_pipeline(
                actor, task, records, resources, pinned, pipeline_id=pipeline_id
            )
        assert listing_id is not None
        listing = await self.catalog.listings.get(actor, listing_id)  # NOT_FOUND when not visible
        if listing.kind not in RUNNABLE_KINDS:
            raise BadInput(f"a {listing.kind} listing cannot be run", field="listingId")
        if listing.kind == ListingKind.PIPELINE and not await self._carries_code(listing_id):
            return await self._submit_pipeline(actor, task, records, resources, pinned, listing_id=listing_id)
        inputs = self._check_inputs(task, listing.input_schema, records, dataset_listing_id, digest)
        if digest is not None:
            inputs["dataset_records"] = await self.scan_dataset(digest, listing.input_schema)
        async with self.db.session() as session:
            account = await session.get(Account, actor.account_id)
            if account is None:
                raise Unauthenticated("your account no longer exists")
            quota = Quota(account.quota_cpu, account.quota_memory_mb, account.quota_gpu)
            suggested = listing.training_resources if task == JobTask.TRAINING else listing.resources
            allocation = allocate(suggested or listing.resources, resources, quota)
            version = await self.latest_version(session, listing_id)
            if version is None:
                raise BadInput("this listing has no published version to run", field="listingId")
            if task == JobTask.INFERENCE and not serves_inference(version):
                raise BadInput(f"{listing.name!r} {NO_CODE}", field="listingId")
            if task == JobTask.TRAINING and commands_of(version.manifest or {})[1] is None:
                raise BadInput(
                    f"{listing.name!r} cannot be trained: it declares no train entrypoint", field="listingId"
                )
            row = Job(
                owner_id=actor.account_id,
                listing_id=listing_id,
                task=task.value,
                status=JobStatus.QUEUED.value,
                resource_class=allocation.resource_class,
                resources=allocation.as_dict(),
                inputs=inputs,
                progress={},
                metrics={},
                logs="",
                attempts=0,
            )
            session.add(row)
        view = JobView.of(row)
        await self._publish(view)
        await self.deliver(row.id, row.resource_class, 1)
        return view

    async def scan_dataset(self, digest: str, input_schema: dict[str, Any] | None) -> int:
        """Count a dataset's records, refusing it now (not in the worker) when one is not JSON or does
        not match the listing's input schema; read as a stream, so memory stays bounded."""
        check = input_check(input_schema)

        def scan(scratch: Path) -> int:
            count = 0
            for count, value in enumerate(DatasetReader(self.settings, digest, scratch).inputs(), 1):
                check(f"the dataset's record {count}", value, "datasetListingId")
            return count

        return await self._in_scratch(scan)

    async def scan_training_data(self, digest: str, what: str, field: str, **details: Any) -> None:
        """Refuse a dataset now (not in the worker) when a record is not a labelled example (an input and
        its target); read as a stream, so memory stays bounded."""
        from executor.training import check_example

        def scan(scratch: Path) -> None:
            for number, value in enumerate(DatasetReader(self.settings, digest, scratch).values(), 1):
                try:
                    check_example(value, f"{what}: example {number}", field)
                except BadInput as exc:
                    raise BadInput(exc.message, **exc.details, **details) from None

        await self._in_scratch(scan)

    async def _in_scratch(self, work: Callable[[Path], Any]) -> Any:
        scratch = Path(tempfile.mkdtemp(prefix="dataset-", dir=self._staging_root()))
        try:
            return await asyncio.to_thread(work, scratch)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def deliver(self, job_id: str, resource_class: str, attempt: int) -> None:
        """Hand a QUEUED job to the queue. Its row is written already, so a queue that refuses it now
        (Redis down) fails nothing: the reconciler re-queues what the database says is queued."""
        try:
            await self.queue.enqueue(job_id, resource_class, attempt)
        except Exception:
            logger.warning("job %s is queued, but the queue refused it for now", job_id, exc_info=True)

    async def _submit_pipeline(
        self,
        actor: Actor,
        task: JobTask,
        records: Sequence[Any] | None,
        resources: dict[str, Any] | None,
        dataset: DatasetInput | None,
        *,
        pipeline_id: str | None = None,
        listing_id: str | None = None,
    ) -> JobView:
        from executor.pipeline_jobs import submit_pipeline
        from executor.pipeline_training import submit_pipeline_training

        if task == JobTask.TRAINING:
            if pipeline_id is None:
                raise BadInput(
                    "a pipeline listing runs as published; train a pipeline of your own (its training "
                    "data is chosen per step)",
                    field="listingId",
                )
            job_id = await submit_pipeline_training(self, actor, pipeline_id, resources)
        else:
            job_id = await submit_pipeline(
                self,
                actor,
                records,
                pipeline_id=pipeline_id,
                listing_id=listing_id,
                resources=resources,
                dataset=dataset,
            )
        view = await self.get(actor, job_id)
        await self._publish(view)
        return view

    async def _carries_code(self, listing_id: str) -> bool:
        """A pipeline published as a code package or image runs as one program, like a model; one
        published from stored steps (``publishPipeline``) runs those steps."""
        async with self.db.session() as session:
            return await carries_code(session, listing_id)

    def _check_inputs(
        self,
        task: JobTask,
        input_schema: dict[str, Any] | None,
        records: Sequence[Any] | None,
        dataset_listing_id: str | None,
        digest: str | None = None,
    ) -> dict[str, Any]:
        if task == JobTask.TRAINING:
            if dataset_listing_id is None and not records:
                raise BadInput("training needs data: a datasetListingId or records", field="datasetListingId")
            if records is not None and not isinstance(records, list | tuple):
                raise BadInput("records must be a list of training examples", field="records")
            if records:
                from executor.training import parse_examples

                examples = parse_examples(list(records))  # refused now, with its reason, not in the worker
                check_against_input_schema(
                    input_schema, {f"records[{i}].input": x for i, (x, _) in enumerate(examples)}
                )
            return {"records": list(records or []), "dataset_listing_id": dataset_listing_id}
        if digest is not None and records is None:
            records = []
        if records is None or not isinstance(records, list | tuple) or not (records or digest):
            raise BadInput("inference needs records: a list of inputs, a file or a dataset", field="records")
        check_inline_count(self.settings, len(records))
        check_against_input_schema(
            input_schema, {f"records[{i}]": record for i, record in enumerate(records)}
        )
        if digest is None:
            return {"records": list(records)}
        # The dataset is read from its stored file when the job runs (pinned: a later version of the
        # dataset does not change what this job scores); only its reference is kept on the row.
        return {
            "records": list(records),
            "dataset_listing_id": dataset_listing_id,
            "dataset_digest": digest,
        }


def _parse_task(task: str) -> JobTask:
    try:
        return JobTask(str(task).lower())
    except ValueError:
        raise BadInput(f"task must be one of {', '.join(t.value for t in JobTask)}; got {task!r}") from None
