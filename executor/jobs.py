"""Jobs: inference (and training) runs as database rows moving QUEUED → RUNNING → a final status.

The row is the truth; the queue carries only the job id (arq on Redis, one queue per resource class, or
an in-process task when there is no Redis); events are notifications for ``Subscription.jobStatus``.

Recovery, because workers die and Redis forgets:
- a RUNNING job proves its worker alive with a heartbeat; ``reconcile`` finds RUNNING jobs whose heartbeat
  is older than ``job_stale_after_s`` and re-queues them (bounded by ``job_max_attempts``, then FAILED
  with the reason), and re-enqueues QUEUED jobs (the arq job id dedupes what Redis still has);
- ``run`` claims a job atomically, so a job re-enqueued twice still runs once at a time; each claim
  counts up ``attempts``, the run's fencing token (``infra.fencing``): a run whose job was re-queued
  while it still ran (it could not beat) writes nothing more once another run holds it, and stops.
Cancellation marks the row CANCELLED; the running worker notices at its next heartbeat or batch and
stops the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import defer

from catalog.actors import Actor
from catalog.choices import parse_choices
from catalog.enums import JobStatus, JobTask, ListingKind
from catalog.keyset import check_page_size, decode_cursor, encode_cursor, newest_first
from catalog.pipelines.runnability import NO_CODE, commands_of, serves_inference
from catalog.pipelines.store import carries_code
from executor.allocation import Quota, allocate
from executor.datasets import DatasetInput, DatasetReader, check_inline_count, dataset_digest
from executor.events import JobEvents, LocalJobEvents
from executor.gpus import GpuPool, parse_devices, shared_pool
from executor.job_cancellation import JobCancellation
from executor.job_claims import JobClaims
from executor.job_inference import JobInference
from executor.job_inputs import check_against_input_schema, input_check
from executor.job_outcomes import JobOutcomes
from executor.job_outputs import START, OutputsCursor, OutputsPage, StoredOutputs, read_all, read_page
from executor.job_queues import InProcessJobQueue, JobQueue
from executor.job_recovery import JobRecovery
from executor.job_runs import JobRuns
from executor.job_views import JobPage, JobView
from executor.job_writes import JobRunWrites
from executor.runtimes import RuntimeSelector
from infra.artifacts import ArtifactStore
from infra.errors import BadInput, Gone, NotFound, Unauthenticated
from infra.settings import Settings
from infra.tables import Account, Job, UsageEvent

if TYPE_CHECKING:
    from catalog.app import CatalogApp

logger = logging.getLogger("mlrepo.executor")

RUNNABLE_KINDS = frozenset(
    {ListingKind.MODEL, ListingKind.ALGORITHM, ListingKind.PIPELINE, ListingKind.NOTEBOOK}
)
MY_JOBS_CURSOR = "my-jobs"  # what a cursor of ``list_mine`` is signed for: no other list takes it


class JobService(JobRuns, JobInference, JobRecovery, JobOutcomes, JobRunWrites, JobCancellation, JobClaims):
    def __init__(
        self,
        settings: Settings,
        catalog: CatalogApp,
        events: JobEvents | None = None,
        queue: JobQueue | None = None,
        selector: RuntimeSelector | None = None,
        gpus: GpuPool | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.db = catalog.db
        self.events = events or LocalJobEvents()
        self.queue: JobQueue = queue or InProcessJobQueue(self.run, retry_deferred_s=settings.job_heartbeat_s)
        self.selector = selector or RuntimeSelector(settings)
        self.gpus = gpus or shared_pool(parse_devices(settings.gpu_devices))
        # Per run (job id, attempt): counted, and referenced, once it finishes.
        self._uses: dict[tuple[str, int], list[UsageEvent]] = {}
        self._outputs: dict[tuple[str, int], StoredOutputs] = {}
        self._artifacts: ArtifactStore | None = None

    # ------------------------------------------------------------------ requester side

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

    async def get(self, actor: Actor, job_id: str) -> JobView:
        """Jobs (and their results) are visible to their owner and admins only; others get NOT_FOUND.
        The job's inputs are not loaded: a view never shows them, and they may be many records."""
        async with self.db.session() as session:
            row = await session.scalar(select(Job).options(defer(Job.inputs)).where(Job.id == job_id))
            if row is None or not (actor.is_admin or row.owner_id == actor.account_id):
                raise NotFound(f"no job with id {job_id!r}")
            return JobView.of(row)

    async def list_mine(
        self,
        actor: Actor,
        *,
        statuses: Sequence[object] | None = None,
        listing_id: str | None = None,
        first: int = 20,
        after: str | None = None,
        max_page_size: int = 100,
    ) -> JobPage:
        """The actor's own jobs, newest first, so a requester can find a job whose id they lost; an
        admin reaches others' jobs by id (``get``), not through this list."""
        if actor.account_id is None:
            raise Unauthenticated("sign in to list your jobs")
        check_page_size(first, max_page_size)
        position = decode_cursor(self.catalog.cursors, MY_JOBS_CURSOR, after) if after else None
        query = select(Job).options(defer(Job.inputs)).where(Job.owner_id == actor.account_id)
        wanted = parse_choices(JobStatus, statuses, "status")
        if wanted:
            query = query.where(Job.status.in_(wanted))
        if listing_id:
            query = query.where(Job.listing_id == listing_id)
        async with self.db.session() as session:
            rows = list((await session.scalars(newest_first(query, Job, position, first))).all())
        has_next = len(rows) > first
        rows = rows[:first]
        cursors = [encode_cursor(self.catalog.cursors, MY_JOBS_CURSOR, r.created_at, r.id) for r in rows]
        return JobPage([JobView.of(r) for r in rows], cursors[-1] if has_next else None, has_next, cursors)

    async def outputs(self, actor: Actor, job_id: str, first: int, after: str | None = None) -> OutputsPage:
        """A page of a final job's per-record outputs (``{output}`` or ``{error}``, in input order) from
        ``after`` (a cursor ``outputs_cursor`` sealed for this job); an empty page for a job that has none
        (not final yet, cancelled, training); GONE once retention dropped them."""
        view = await self.get(actor, job_id)
        start = OutputsCursor.open(self.catalog.cursors, view.id, after) if after is not None else START
        if first < 1 or first > self.settings.job_outputs_page_size:
            raise BadInput(
                f"first must be between 1 and {self.settings.job_outputs_page_size}; got {first}",
                field="first",
            )
        _check_outputs_kept(view)
        if view.outputs_digest is None:
            if start != START:
                raise BadInput("this job has no outputs to page through", field="after")
            return OutputsPage(START, [], [], 0)
        return await asyncio.to_thread(
            read_page, self.artifacts, view.outputs_digest, view.outputs_count or 0, start, first
        )

    def outputs_cursor(self, job_id: str, position: OutputsCursor) -> str:
        """The opaque cursor of ``position`` in job ``job_id``'s outputs (valid for that job only)."""
        return position.seal(self.catalog.cursors, job_id)

    async def all_outputs(self, view: JobView) -> list[dict[str, Any]]:
        """Every output of a job its caller may see (``view`` came from ``get``); GONE once expired."""
        _check_outputs_kept(view)
        if view.outputs_digest is None:
            return []
        return await asyncio.to_thread(read_all, self.artifacts, view.outputs_digest)

    async def watch(self, actor: Actor, job_id: str) -> AsyncIterator[JobView]:
        """The job's current state, then every change, until it is final. Subscribes before reading, so no
        change between the read and the subscription is missed; events only trigger a re-read."""
        await self.get(actor, job_id)
        async with self.events.subscribe(job_id) as stream:
            wake = asyncio.Event()

            async def pump() -> None:
                async for _ in stream:
                    wake.set()

            pumping = asyncio.create_task(pump())
            try:
                view = await self.get(actor, job_id)
                yield view
                last = _change_key(view)
                while not view.is_final:
                    # Re-read on every event, and now and then anyway: events may be lost (Redis restart).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=self.settings.job_heartbeat_s)
                    wake.clear()
                    view = await self.get(actor, job_id)
                    if _change_key(view) != last:
                        last = _change_key(view)
                        yield view
            finally:
                pumping.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pumping

    # ------------------------------------------------------------------ worker side

    # ------------------------------------------------------------------ recovery

    # ------------------------------------------------------------------ internals

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
        if records is None or not isinstance(records, list | tuple):
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


def _change_key(view: JobView) -> tuple[Any, ...]:
    """What a status stream reports a change of. ``attempts`` too: a job whose worker died is re-queued
    and claimed again, often between two looks, and is then RUNNING again, from the start."""
    return (view.status, view.progress, view.attempts)


def _check_outputs_kept(view: JobView) -> None:
    """A job whose outputs passed their retention answers GONE, not an empty page: it had outputs, and
    they will not come back (its summary and metrics remain on the job)."""
    if view.outputs_expired_at is not None:
        raise Gone(
            f"the outputs of job {view.id} were dropped on {view.outputs_expired_at:%Y-%m-%d}, past the "
            "retention for finished jobs' outputs; its status, summary and metrics remain: run it "
            "again to get outputs",
            field="outputs",
        )


def _parse_task(task: str) -> JobTask:
    try:
        return JobTask(str(task).lower())
    except ValueError:
        raise BadInput(f"task must be one of {', '.join(t.value for t in JobTask)}; got {task!r}") from None
