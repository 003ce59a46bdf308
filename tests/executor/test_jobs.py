"""Jobs end to end on the real database (SQLite and PostgreSQL) and the real bwrap sandbox, in-process
(no Redis): allocation, QUEUED → RUNNING → final with progress, filtering, usage, access, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from datetime import timedelta

import pytest
from executor_support import DroppingQueue, job_service, outcome, publish_dataset, publish_model, watch_all
from sqlalchemy import select, text

from catalog.actors import ANONYMOUS
from catalog.enums import JobStatus
from executor.datasets import parse_json_lines
from executor.events import LocalJobEvents
from executor.job_claims import JobDeferred, claim_of
from executor.job_queues import IN_PROCESS_MAX_JOBS, ArqJobQueue, InProcessJobQueue
from executor.job_views import JobView
from executor.jobs import JobService
from infra.artifacts import ArtifactStore
from infra.errors import BadInput, Conflict, NotFound, Unauthenticated
from infra.settings import Settings
from infra.tables import Job, Listing, ListingVersion, UsageEvent, utcnow

MODEL = """
import json, sys, time
for line in sys.stdin:
    record = json.loads(line)
    text = record["input"]
    if text == "sleep":
        time.sleep(60)
    label = "positive" if "good" in text else "negative"
    print(json.dumps({"id": record["id"], "output": {"label": label, "confidence": 0.75, "debug": "x"}}))
"""


@pytest.fixture
def job_settings(settings: Settings, bwrap_runtime) -> Settings:
    return settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})


@pytest.fixture
async def jobs(job_settings: Settings, catalog) -> JobService:
    service = JobService(job_settings, catalog)
    yield service
    await service.queue.close()


async def bare_job(catalog, owner_id: str, status: JobStatus) -> Job:
    """A job row of no listing, as the queue or a worker would find it (RUNNING: its last heartbeat
    an hour ago), for the tests of claiming and recovery."""
    running = status == JobStatus.RUNNING
    async with catalog.db.session() as session:
        row = Job(
            owner_id=owner_id,
            task="inference",
            status=status.value,
            resource_class="cpu",
            resources={"cpu": 1.0, "memory_mb": 64, "gpu": 0},
            inputs={"records": []},
            progress={},
            metrics={},
            logs="",
            attempts=1 if running else 0,
            heartbeat_at=utcnow() - timedelta(hours=1) if running else None,
        )
        session.add(row)
    return row


async def test_inference_job_runs_to_success_with_progress_filtering_and_usage(
    jobs: JobService, catalog, people, job_settings: Settings
) -> None:
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    records = ["good movie", "bad plot"] + [f"good {i}" for i in range(40)]
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=records)
    assert view.status == JobStatus.QUEUED
    assert view.resources == {"cpu": 1.0, "memory_mb": 256, "gpu": 0} and view.resource_class == "cpu"

    seen = await watch_all(jobs, people["alice"], view.id)
    final = seen[-1]
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert JobStatus.RUNNING in [v.status for v in seen[:-1]] or final.progress["batches_done"] >= 1
    assert final.progress["records_done"] == final.progress["records_total"] == 42
    assert final.progress["batches_done"] >= 2  # a probe batch, then the rest
    outputs = [r["output"] for r in await jobs.all_outputs(final)]
    assert outputs[0] == {"label": "positive", "confidence": 0.75}  # "debug" is not declared: dropped
    assert outputs[1]["label"] == "negative"
    assert final.metrics["runtime"] == "bwrap" and final.metrics["records"] == 42
    assert final.started_at is not None and final.finished_at is not None

    async with catalog.db.session() as session:
        listing = await session.get(Listing, published.listing_id)
        events = (await session.execute(UsageEvent.__table__.select())).all()
    assert listing.usage_count == 1 and listing.success_count == 1
    assert listing.latency_p50_ms is not None and listing.relative_usage == 1.0
    assert len(events) == 1


async def test_results_are_visible_to_the_owner_only(jobs: JobService, catalog, people, job_settings) -> None:
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["good"])
    with pytest.raises(NotFound):
        await jobs.get(people["bob"], view.id)
    with pytest.raises(NotFound):
        await jobs.cancel(people["bob"], view.id)
    await watch_all(jobs, people["alice"], view.id)
    with pytest.raises(Conflict, match="already finished"):  # the job's state, not the input, is wrong
        await jobs.cancel(people["alice"], view.id)


async def test_allocation_is_bounded_by_the_quota(jobs: JobService, catalog, people, job_settings) -> None:
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    async with catalog.db.session() as session:
        row = await session.get(Listing, published.listing_id)
        row.resources = {"cpu": 8, "memory_mb": 4096, "gpu": 0}  # more than alice may use
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["good"])
    assert view.resources == {"cpu": 2.0, "memory_mb": 1024, "gpu": 0}
    await watch_all(jobs, people["alice"], view.id)
    with pytest.raises(BadInput, match=r"resources.cpu=3 exceeds your quota of 2"):
        await jobs.submit(
            people["alice"], published.listing_id, "inference", records=["x"], resources={"cpu": 3}
        )
    with pytest.raises(BadInput, match=r"resources.gpu=1 exceeds your quota of 0"):
        await jobs.submit(
            people["alice"], published.listing_id, "inference", records=["x"], resources={"gpu": 1}
        )


async def test_bad_requests_get_clear_errors(jobs: JobService, catalog, people, job_settings) -> None:
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    with pytest.raises(NotFound):
        await jobs.submit(people["alice"], "nope", "inference", records=["x"])
    with pytest.raises(BadInput, match="task must be one of"):
        await jobs.submit(people["alice"], published.listing_id, "dance", records=["x"])
    with pytest.raises(BadInput, match="inference needs records"):
        await jobs.submit(people["alice"], published.listing_id, "inference", records=None)
    # Nothing to score (an empty list, an empty uploaded file) is refused, as a pipeline run refuses it:
    # it was queued, ran no sandbox and SUCCEEDED with no output, hiding the client's mistake.
    with pytest.raises(BadInput, match="inference needs records") as nothing:
        await jobs.submit(people["alice"], published.listing_id, "inference", records=[])
    assert nothing.value.details == {"field": "records"}
    async with catalog.db.session() as session:
        assert (await session.scalars(select(Job))).all() == []  # nothing queued by the refusals
    async with catalog.db.session() as session:
        row = await session.get(Listing, published.listing_id)
        row.input_schema = {"type": "string", "maxLength": 5}
    with pytest.raises(BadInput, match=r"records\[1\] does not match the listing's input schema"):
        await jobs.submit(people["alice"], published.listing_id, "inference", records=["ok", "far too long"])


async def test_cancel_stops_a_running_job(jobs: JobService, catalog, people, job_settings) -> None:
    published = await publish_model(job_settings, catalog, people["producer"], MODEL, timeout_s=60)
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["sleep"])
    async for current in jobs.watch(people["alice"], view.id):
        if current.status == JobStatus.RUNNING:
            break
    cancelled = await jobs.cancel(people["alice"], view.id)
    assert cancelled.status == JobStatus.CANCELLED and cancelled.error == "cancelled by the requester"
    for _ in range(100):  # the worker side notices at its next heartbeat and stops the sandbox
        if not jobs.queue.tasks:
            break
        await asyncio.sleep(0.05)
    assert not jobs.queue.tasks
    assert (await jobs.get(people["alice"], view.id)).status == JobStatus.CANCELLED
    assert (await jobs.cancel(people["alice"], view.id)).status == JobStatus.CANCELLED  # idempotent
    with pytest.raises(Unauthenticated):  # an anonymous write; it was NOT_FOUND, as if no such job
        await jobs.cancel(ANONYMOUS, view.id)


async def test_a_cancel_stops_the_sandbox_at_once_not_at_the_next_heartbeat(
    catalog, people, job_settings: Settings
) -> None:
    """The worker found a cancel (made through any API process) only at its next heartbeat: the sandbox
    ran on for up to ``job_heartbeat_s`` (5 s by default). The cancel's event wakes it now."""
    async with job_service(job_settings, catalog, job_heartbeat_s=60) as jobs:
        published = await publish_model(job_settings, catalog, people["producer"], MODEL, timeout_s=60)
        view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["sleep"])
        async for current in jobs.watch(people["alice"], view.id):
            if current.status == JobStatus.RUNNING:
                break
        await jobs.cancel(people["alice"], view.id)
        for _ in range(200):
            if not jobs.queue.tasks:
                break
            await asyncio.sleep(0.05)
        assert not jobs.queue.tasks  # the run (and its sandbox) ended well before a heartbeat was due


async def test_a_job_that_fails_in_the_sandbox_reports_why(
    jobs: JobService, catalog, people, job_settings
) -> None:
    crashing = "import sys\nraise SystemExit('model weights missing')\n"
    published = await publish_model(job_settings, catalog, people["producer"], crashing)
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["a", "b"])
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.FAILED
    assert "model weights missing" in final.error
    async with catalog.db.session() as session:
        listing = await session.get(Listing, published.listing_id)
    assert listing.failure_count == 1


async def test_an_internal_failure_is_not_shown_to_the_requester(
    jobs: JobService, catalog, people, job_settings
) -> None:
    """An unexpected error inside the worker (here: the stored package replaced by a directory, so
    reading it fails with an OSError naming the host path) fails the job with a generic reason: its
    text, with server paths, belongs in the operator's log, not in what the requester reads."""
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    blob = ArtifactStore.from_settings(job_settings).locate(published.digest).path
    blob.chmod(0o644)
    blob.unlink()
    blob.mkdir()
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["good"])
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.FAILED
    assert str(job_settings.data_dir) not in f"{final.error} {final.logs} {final.result}"
    assert "IsADirectoryError" not in final.error and view.id in final.error


async def test_inference_on_a_dataset_listing(jobs: JobService, catalog, people, job_settings) -> None:
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    lines = [
        {"input": "good one", "target": "positive"},
        {"input": "bad one", "target": "negative"},
        "plain good",
    ]
    dataset_id = await publish_dataset(job_settings, catalog, people["producer"], lines, "scored-set")
    view = await jobs.submit(
        people["alice"], published.listing_id, "inference", dataset_listing_id=dataset_id
    )
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED
    assert [r["output"]["label"] for r in await jobs.all_outputs(final)] == [
        "positive",
        "negative",
        "positive",
    ]
    with pytest.raises(BadInput, match="datasetListingId must name a dataset listing"):
        await jobs.submit(
            people["alice"], published.listing_id, "inference", dataset_listing_id=published.listing_id
        )


async def test_a_new_version_by_update_keeps_the_published_code(
    jobs: JobService, catalog, people, job_settings
) -> None:
    """``updateListing`` with a new ``version`` (a better description) recorded a version without the
    package, and runs read the latest version: the published model failed every job with "declares no
    entrypoint to run" from then on, and its re-verification was skipped (no reference behaviour)."""
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    await catalog.listings.update(
        people["producer"], published.listing_id, {"version": "1.0.1", "description": "Sharper words."}
    )
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["good"])
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert final.metrics["version"] == "1.0.1"
    async with catalog.db.session() as session:
        versions = (
            await session.execute(
                select(ListingVersion)
                .where(ListingVersion.listing_id == published.listing_id)
                .order_by(ListingVersion.created_at)
            )
        ).scalars()
        first, second = versions
    assert (second.artifact_kind, second.artifact_digest) == ("package", published.digest)
    assert second.reference_signatures == first.reference_signatures and "1.0.0" in second.notes


async def test_a_listing_without_code_is_refused_at_submission(jobs: JobService, catalog, people) -> None:
    """A catalog entry (the demo catalog, an import, createListing) has no code to run: the job was
    queued and failed in the worker with "BadInput: this listing version declares no entrypoint"."""
    entry = await catalog.listings.create(
        people["producer"], {"name": "described-only", "kind": "model", "category": "nlp"}
    )
    with pytest.raises(BadInput, match="'described-only' cannot be run: it has no published code"):
        await jobs.submit(people["alice"], entry.id, "inference", records=["good"])
    async with catalog.db.session() as session:
        assert await session.scalar(select(Job.id).where(Job.listing_id == entry.id)) is None


async def test_concurrent_deliveries_of_a_job_claim_it_once(jobs: JobService, catalog, people) -> None:
    """The same job delivered twice at once (reconciler and queue, two workers) runs once: on SQLite a
    read takes no lock, so both deliveries used to see QUEUED and both moved the job to RUNNING."""
    for _ in range(10):
        row = await bare_job(catalog, people["alice"].account_id, JobStatus.QUEUED)
        claims = await asyncio.gather(*(jobs.claim(row.id) for _ in range(3)))
        assert [c for c in claims if c is not None] and sum(c is not None for c in claims) == 1
        async with catalog.db.session() as session:
            assert (await session.get(Job, row.id)).attempts == 1


async def test_the_heartbeat_outlives_a_database_error(sqlite_settings: Settings, caplog) -> None:
    """A heartbeat that met one database error (here: the file locked past SQLite's busy timeout) used to
    end for good: the job then looked lost to the reconciler, which ran it again while it still ran, and
    a cancel no longer stopped its sandbox."""
    from catalog.app import CatalogApp

    settings = sqlite_settings.model_copy(update={"job_heartbeat_s": 0.05})
    async with await CatalogApp.open(settings, with_index=False) as catalog:
        account = await catalog.accounts.create("alice", "requester")
        row = await bare_job(catalog, account.id, JobStatus.RUNNING)
        jobs = JobService(settings, catalog)
        beating = asyncio.create_task(jobs._heartbeat(claim_of(row), None))
        locker = sqlite3.connect(settings.data_dir / "mlrepo.db", isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # no other writer until it ends
            for _ in range(600):  # until a heartbeat has failed (SQLite's busy timeout is 10 s)
                if beating.done() or "heartbeat" in caplog.text:
                    break
                await asyncio.sleep(0.05)
        finally:
            locker.execute("ROLLBACK")
            locker.close()

        async def beat_is_fresh() -> bool:
            async with catalog.db.session() as session:
                beat = (await session.get(Job, row.id)).heartbeat_at
            return beat.replace(tzinfo=None) > utcnow().replace(tzinfo=None) - timedelta(minutes=1)

        for _ in range(200):  # the next heartbeat, now that the database answers again
            if beating.done() or await beat_is_fresh():
                break
            await asyncio.sleep(0.05)
        try:
            assert not beating.done(), beating.exception()
            assert await beat_is_fresh()
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating


async def test_the_reconciler_never_requeues_a_job_that_finished_meanwhile(
    job_settings: Settings, catalog, people
) -> None:
    """The reconciler read a stale RUNNING job, then wrote QUEUED over it unconditionally: a job whose
    worker finished it in between was run again, its result and usage counted twice."""
    jobs = JobService(job_settings, catalog, queue=DroppingQueue())
    for _ in range(10):
        row = await bare_job(catalog, people["alice"].account_id, JobStatus.RUNNING)
        _, finished = await asyncio.gather(jobs.reconcile(), jobs.finish(row.id, JobStatus.SUCCEEDED))
        status = (await jobs.get(people["alice"], row.id)).status
        assert status == (JobStatus.SUCCEEDED if finished else JobStatus.QUEUED)


async def test_nan_in_an_output_fails_that_record_alike_on_both_databases(
    jobs: JobService, catalog, people, job_settings
) -> None:
    """PostgreSQL refused a result holding NaN (the job failed with a DBAPIError, every result lost);
    SQLite stored it and the job succeeded: now the record with NaN fails with its reason, on both."""
    nan_model = MODEL.replace('"confidence": 0.75', '"confidence": float("nan") if "nan" in text else 0.75')
    published = await publish_model(
        job_settings, catalog, people["producer"], nan_model, output_schema={"type": "object"}
    )
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["good", "nan"])
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    first, second = await jobs.all_outputs(final)
    assert first["output"]["confidence"] == 0.75 and "NaN or Infinity" in second["error"]
    with pytest.raises(BadInput, match="not JSON"):
        parse_json_lines(b'"ok"\n{"x": NaN}\n', "the uploaded file")


async def test_a_job_submitted_while_redis_is_down_is_accepted_for_the_reconciler(
    job_settings: Settings, catalog, people
) -> None:
    """The job row was written, then handing it to Redis failed: the requester got an INTERNAL error
    for a job that existed and would run once the reconciler re-queued it (a retry made a second one)."""
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    jobs = JobService(job_settings, catalog, queue=ArqJobQueue("redis://127.0.0.1:1"))  # nothing listens
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["good"])
    assert (await jobs.get(people["alice"], view.id)).status == JobStatus.QUEUED
    assert (await jobs.reconcile())["requeued"] == 1  # still refused by Redis, and still no error


async def test_a_job_queued_before_its_listing_was_pulled_does_not_run_it(
    job_settings: Settings, catalog, people
) -> None:
    """Visibility was checked at submission only: a job waiting in the queue while its listing was
    suspended (failed re-verification: changed or tampered behaviour) or made private still ran it."""
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    jobs = JobService(job_settings, catalog, queue=DroppingQueue())  # queued, not yet taken
    waiting = [
        await jobs.submit(people["alice"], published.listing_id, "inference", records=["good"])
        for _ in range(2)
    ]
    await catalog.listings.set_system_fields(
        published.listing_id, verification_status="suspended", status="suspended"
    )
    assert await jobs.run(waiting[0].id) == JobStatus.FAILED
    failed = await jobs.get(people["alice"], waiting[0].id)
    assert "no longer available" in failed.error and failed.result is None
    async with catalog.db.session() as session:
        assert (await session.get(Listing, published.listing_id)).usage_count == 0
    # Its owner still runs it (to see what changed).
    own = await jobs.submit(people["producer"], published.listing_id, "inference", records=["good"])
    assert await jobs.run(own.id) == JobStatus.SUCCEEDED


async def test_inference_on_a_dataset_and_records_scores_both(
    jobs: JobService, catalog, people, job_settings
) -> None:
    """Records given with a dataset silently replaced it: the dataset was never scored (training, and
    records with an uploaded file, take both)."""
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    dataset_id = await publish_dataset(
        job_settings, catalog, people["producer"], [{"input": "good one"}, "bad one"], "scored-set"
    )
    view = await jobs.submit(
        people["alice"],
        published.listing_id,
        "inference",
        records=["good extra"],
        dataset_listing_id=dataset_id,
    )
    final = await outcome(jobs, people["alice"], view.id)
    assert [r["output"]["label"] for r in await jobs.all_outputs(final)] == [
        "positive",
        "negative",
        "positive",
    ]


async def test_jobs_run_in_process_take_turns(job_settings: Settings, catalog, people) -> None:
    """Without Redis every submitted job started its sandbox at once: one requester's script submitting
    hundreds of jobs ran hundreds of sandboxes, each within the quota, together far beyond it."""
    jobs = JobService(job_settings, catalog)
    jobs.queue = InProcessJobQueue(jobs.run, max_jobs=2)
    assert JobService(job_settings, catalog).queue.max_jobs == IN_PROCESS_MAX_JOBS
    slow = MODEL.replace('if text == "sleep":\n        time.sleep(60)', "time.sleep(0.5)")
    published = await publish_model(job_settings, catalog, people["producer"], slow)
    views = [
        await jobs.submit(people["alice"], published.listing_id, "inference", records=["good"])
        for _ in range(5)
    ]
    most_running = 0
    for _ in range(600):
        async with catalog.db.session() as session:  # one read: the statuses of one moment
            query = select(Job.status).where(Job.id.in_([v.id for v in views]))
            statuses = list((await session.scalars(query)).all())
        most_running = max(most_running, statuses.count(JobStatus.RUNNING))
        if all(JobStatus(s).is_final for s in statuses):
            break
        await asyncio.sleep(0.02)
    assert statuses == [JobStatus.SUCCEEDED] * 5
    assert most_running <= 2
    await jobs.queue.close()


class CancelAfterLastBatch(LocalJobEvents):
    """The real in-process events, with a requester who cancels the moment the last batch is reported:
    the run has nothing left to do but finish."""

    def __init__(self, requester) -> None:
        super().__init__()
        self.requester = requester
        self.jobs: JobService | None = None
        self.cancelled: list[str] = []

    async def publish(self, job_id: str, event: dict) -> None:
        await super().publish(job_id, event)
        progress = event.get("progress") or {}
        last_batch = (
            progress.get("records_total") and progress.get("records_done") == progress["records_total"]
        )
        if last_batch and not self.cancelled:
            self.cancelled.append(job_id)
            await self.jobs.cancel(self.requester, job_id)


async def test_a_cancel_after_the_last_batch_counts_no_usage(catalog, people, job_settings: Settings) -> None:
    """The requester gets no result from a job cancelled this late, yet its run was counted for the
    listing (a success, with its latency), as if the job had finished."""
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    events = CancelAfterLastBatch(people["alice"])
    jobs = JobService(job_settings, catalog, events=events)
    events.jobs = jobs
    try:
        view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["good movie"])
        await asyncio.gather(*jobs.queue.tasks)
    finally:
        await jobs.queue.close()
    assert events.cancelled == [view.id]
    final = await jobs.get(people["alice"], view.id)
    assert final.status == JobStatus.CANCELLED and final.result is None
    assert final.outputs_digest is None and await jobs.all_outputs(final) == []  # stored, never referenced
    async with catalog.db.session() as session:
        listing = await session.get(Listing, published.listing_id)
        uses = (await session.scalars(select(UsageEvent).where(UsageEvent.listing_id == listing.id))).all()
    assert (listing.usage_count, listing.success_count, uses) == (0, 0, [])


class DatabaseFailsAtTheEnd(LocalJobEvents):
    """The real in-process events, with a database that fails what a run writes after its last batch, for
    a moment: SQLite's file is locked past the busy timeout; on PostgreSQL the session that records the
    run's usage waits for a lock, and its connection is cut."""

    def __init__(self, catalog) -> None:
        super().__init__()
        self.db = catalog.db
        self.failing: asyncio.Task | None = None

    async def publish(self, job_id: str, event: dict) -> None:
        await super().publish(job_id, event)
        progress = event.get("progress") or {}
        last_batch = progress.get("records_total") and progress["records_done"] == progress["records_total"]
        if last_batch and self.failing is None:  # once: the final status's event shows the same progress
            if self.db.is_sqlite:
                path = self.db.engine.url.database
                locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
                self.failing = asyncio.create_task(self._release_later(locker))
            else:
                blocker = await self.db.engine.connect()
                await blocker.exec_driver_sql("LOCK TABLE usage_events IN SHARE MODE")
                self.failing = asyncio.create_task(self._cut_the_waiter(blocker))

    @staticmethod
    async def _release_later(locker: sqlite3.Connection) -> None:
        await asyncio.sleep(1.0)
        locker.execute("ROLLBACK")
        locker.close()

    async def _cut_the_waiter(self, blocker) -> None:
        cut = text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        try:
            async with asyncio.timeout(10):
                while True:
                    async with self.db.engine.connect() as connection:  # a fresh pg_stat_activity
                        if (await connection.execute(cut)).all():
                            return
                    await asyncio.sleep(0.02)
        finally:
            await blocker.rollback()
            await blocker.close()


async def test_a_run_whose_finish_meets_a_database_error_still_ends(
    settings: Settings, bwrap_runtime
) -> None:
    """The final status is written once the run's heartbeat has stopped: a finish that met one database
    error (two finishes deadlocked on PostgreSQL, under a full suite's load) left its job RUNNING with
    nobody beating for it, and its status stream silent until the reconciler ran it again."""
    from catalog.app import CatalogApp

    settings = settings.model_copy(
        update={"runtime": "bwrap", "job_heartbeat_s": 0.2, "sqlite_busy_timeout_s": 0.3}
    )
    async with await CatalogApp.open(settings, with_index=False) as catalog:
        producer = (await catalog.accounts.create("producer", "producer")).as_actor()
        alice = (await catalog.accounts.create("alice", "requester")).as_actor()
        published = await publish_model(settings, catalog, producer, MODEL)
        events = DatabaseFailsAtTheEnd(catalog)
        jobs = JobService(settings, catalog, events=events)
        try:
            view = await jobs.submit(alice, published.listing_id, "inference", records=["good movie"])
            await asyncio.gather(*jobs.queue.tasks, return_exceptions=True)
            await events.failing
        finally:
            await jobs.queue.close()
        final = await jobs.get(alice, view.id)
        async with catalog.db.session() as session:
            uses = (await session.scalars(select(UsageEvent))).all()
    if catalog.db.is_sqlite:  # its results could not be stored either: failed, and not counted
        assert final.status == JobStatus.FAILED and final.error.startswith("internal error")
        assert uses == []
    else:  # only the usage's transaction was cut: tried again, whole
        assert final.status == JobStatus.SUCCEEDED, final.error
        assert final.outputs_count == 1 and [use.success for use in uses] == [True]


async def test_an_account_runs_at_most_its_limit_of_jobs_at_once(
    catalog, people, job_settings: Settings
) -> None:
    """Quotas bounded one job; nothing bounded how many one account ran, so one requester could hold
    every worker. Past ``job_max_running_per_account`` a claim leaves the job QUEUED (no attempt spent)
    for a later delivery; concurrent claims of one account are serialized, so two cannot both pass."""
    jobs = JobService(job_settings.model_copy(update={"job_max_running_per_account": 2}), catalog)
    alice, bob = people["alice"].account_id, people["bob"].account_id
    try:
        queued = [await bare_job(catalog, alice, JobStatus.QUEUED) for _ in range(4)]
        outcomes = await asyncio.gather(*(jobs.claim(row.id) for row in queued), return_exceptions=True)
        assert sum(isinstance(o, Job) for o in outcomes) == 2
        assert all(isinstance(o, Job | JobDeferred) for o in outcomes), outcomes
        waiting = [row for row, o in zip(queued, outcomes, strict=True) if isinstance(o, JobDeferred)]
        async with catalog.db.session() as session:
            rows = [await session.get(Job, row.id) for row in waiting]
        assert [(r.status, r.attempts) for r in rows] == [("queued", 0)] * 2
        assert await jobs.claim((await bare_job(catalog, bob, JobStatus.QUEUED)).id) is not None  # his own
        step = await bare_job(catalog, alice, JobStatus.QUEUED)  # a pipeline's step: in its job's place
        async with catalog.db.session() as session:
            (await session.get(Job, step.id)).inputs = {"records": [], "pipeline_job_id": queued[0].id}
        assert await jobs.claim(step.id) is not None
        running = [o for o in outcomes if isinstance(o, Job)]
        assert await jobs.finish(running[0].id, JobStatus.SUCCEEDED)
        assert await jobs.claim(waiting[0].id) is not None  # a place came free
        with pytest.raises(JobDeferred):
            await jobs.claim(waiting[1].id)
    finally:
        await jobs.queue.close()


async def test_jobs_past_the_account_limit_wait_their_turn_in_process(
    catalog, people, job_settings: Settings
) -> None:
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    jobs = JobService(job_settings.model_copy(update={"job_max_running_per_account": 1}), catalog)
    try:
        views = [
            await jobs.submit(people["alice"], published.listing_id, "inference", records=[f"good {i}"])
            for i in range(3)
        ]
        finals = [await outcome(jobs, people["alice"], view.id) for view in views]
    finally:
        await jobs.queue.close()
    assert [f.status for f in finals] == [JobStatus.SUCCEEDED] * 3 and all(f.attempts == 1 for f in finals)
    ran = sorted(finals, key=lambda f: f.started_at)
    assert all(a.finished_at <= b.started_at for a, b in itertools.pairwise(ran))  # one at a time


async def test_a_version_given_by_an_edit_keeps_running_the_published_artifact(
    jobs: JobService, catalog, people, job_settings
) -> None:
    """An edit with a new version number changes no code: the model and the dataset keep running what
    they were published with (the edit's version row used to carry no artifact, so every later job
    failed with "this listing version declares no entrypoint to run")."""
    model = await publish_model(job_settings, catalog, people["producer"], MODEL)
    dataset_id = await publish_dataset(job_settings, catalog, people["producer"], ["good one"], "bumped-set")
    for listing_id in (model.listing_id, dataset_id):
        await catalog.listings.update(
            people["producer"], listing_id, {"version": "1.1.0", "description": "clearer words"}
        )
    view = await jobs.submit(people["alice"], model.listing_id, "inference", dataset_listing_id=dataset_id)
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert [r["output"]["label"] for r in await jobs.all_outputs(final)] == ["positive"]
    versions = await catalog.listings.versions(people["alice"], model.listing_id)
    assert [(v.version, v.artifact_digest) for v in versions] == [
        ("1.0.0", model.digest),
        ("1.1.0", model.digest),
    ]
    assert versions[1].notes == "fields edited; runs the package of version 1.0.0"


async def test_a_status_stream_shows_that_a_lost_job_runs_again(
    job_settings: Settings, catalog, people
) -> None:
    """The stream compared status and progress only: a job re-queued after its worker died and claimed
    again at once (RUNNING → QUEUED → RUNNING between two looks) showed its subscriber nothing until it
    ended, though it had started over on another worker."""
    quiet = job_settings.model_copy(update={"job_heartbeat_s": 60})  # changes show by their events only
    jobs = JobService(quiet, catalog, queue=DroppingQueue())
    row = await bare_job(catalog, people["alice"].account_id, JobStatus.RUNNING)
    stream = jobs.watch(people["alice"], row.id)
    assert (await anext(stream)).attempts == 1
    assert (await jobs.reconcile())["requeued"] == 1
    assert await jobs.claim(row.id) is not None  # another worker takes it at once

    async def restarted() -> JobView:
        async for view in stream:  # (it may show the QUEUED in between too)
            if view.attempts == 2 or view.is_final:
                return view
        raise AssertionError("the stream ended")

    again = await asyncio.wait_for(restarted(), 10)
    assert (again.status, again.attempts) == (JobStatus.RUNNING, 2)
    await jobs.finish(row.id, JobStatus.SUCCEEDED)
    assert [view.status async for view in stream][-1] == JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    "program",
    [
        "import sys\nsys.stderr.write('weights\\x00missing\\n')\nsys.exit(3)\n",
        "import json, sys\nfor line in sys.stdin:\n"
        "    print(json.dumps({'id': json.loads(line)['id'], 'error': 'weights\\x00missing'}))\n",
    ],
    ids=["stderr", "record-error"],
)
async def test_a_nul_in_what_the_sandbox_reports_fails_the_job_alike_on_both_databases(
    jobs: JobService, catalog, people, job_settings, program: str
) -> None:
    """The job's error quotes the sandbox's last stderr line or a record's error; PostgreSQL cannot store
    NUL in a text column, so a package printing one made the job's final write fail there (the outcome
    was lost; SQLite stored it). NUL now becomes U+FFFD on both."""
    published = await publish_model(job_settings, catalog, people["producer"], program)
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["a"])
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.FAILED
    assert "weights\ufffdmissing" in final.error and "\x00" not in final.logs
