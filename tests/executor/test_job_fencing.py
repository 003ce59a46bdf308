"""A job run that recovery took over while it still ran writes nothing over the run that holds it now.

Recovery re-queues a RUNNING job whose heartbeat is older than ``job_stale_after_s``; the worker may be
alive all the same (its beats could not land: a database outage, a long pause). Each claim counts up
``attempts``, the run's fencing token, and every write of a run holds only while the row carries it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest
from executor_support import DroppingQueue, job_service, publish_model
from sqlalchemy import select, update

from catalog.enums import JobStatus
from executor.job_claims import claim_of
from executor.job_runs import SUPERSEDED
from executor.jobs import JobService
from infra.artifacts import ArtifactStore
from infra.fencing import Claim
from infra.settings import Settings
from infra.tables import Job, Listing, ListingVersion, utcnow

SLOW_MODEL = """
import json, sys, time
time.sleep(3)  # longer than job_stale_after_s, and no write meanwhile: the job looks lost
for line in sys.stdin:
    record = json.loads(line)
    print(json.dumps({"id": record["id"], "output": {"label": "LABEL", "confidence": 0.75}}))
"""
SLOW_ALGORITHM = """
import json, sys, time
if sys.argv[1:] == ["train"]:
    time.sleep(3)  # as SLOW_MODEL: the job looks lost meanwhile
    json.dump({}, open("/output/weights.json", "w"))
    sys.exit(0)
for line in sys.stdin:
    print(json.dumps({"id": json.loads(line)["id"], "output": {"label": "positive"}}))
"""
ASLEEP_MODEL = """
import json, sys, time
time.sleep(120)
"""


@pytest.fixture
def fencing_settings(settings: Settings, bwrap_runtime) -> Settings:
    return settings.model_copy(update={"runtime": "bwrap", "job_stale_after_s": 1.0})


async def add_version(settings: Settings, catalog, listing_id: str, source: str, version: str) -> None:
    """A newer version of the listing, stored as ``publish_model`` stores the first."""
    from catalog.publishing.packaging import normalize_package

    root = settings.data_dir / "src" / f"v{version}"
    root.mkdir(parents=True)
    (root / "model.py").write_text(source)
    stored = ArtifactStore.from_settings(settings).put_file(
        normalize_package(root, settings.data_dir / f"v{version}.tar.gz")
    )
    async with catalog.db.session() as session:
        session.add(
            ListingVersion(
                listing_id=listing_id,
                version=version,
                artifact_kind="package",
                artifact_digest=stored.digest,
                manifest={"command": ["python3", "model.py"], "entrypoint": ["python3", "model.py"]},
            )
        )


async def running_attempt(jobs: JobService, job_id: str, attempt: int) -> None:
    for _ in range(600):
        async with jobs.db.session() as session:
            row = await session.get(Job, job_id)
            if row.status == JobStatus.RUNNING and row.attempts == attempt:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never ran its attempt {attempt}")


async def recovered_and_run_again(
    stalled: JobService, second: JobService, job_id: str, meanwhile: Awaitable[None] | None = None
) -> tuple[str, str]:
    """Once the stalled worker's run of the job has started (and ``meanwhile`` is done), recovery takes the
    job from it as soon as it looks lost and the second worker runs it again; both runs' outcomes."""
    [first_run] = list(stalled.queue.tasks)
    await running_attempt(stalled, job_id, 1)
    if meanwhile is not None:
        await meanwhile
    for _ in range(200):  # once the first run's last sign of life is job_stale_after_s old
        if (await second.reconcile())["requeued"]:
            break
        await asyncio.sleep(0.05)
    [second_run] = list(second.queue.tasks)
    return await asyncio.wait_for(first_run, 60), await asyncio.wait_for(second_run, 60)


async def test_a_run_taken_over_by_recovery_records_nothing_over_the_new_runs_outcome(
    fencing_settings: Settings, catalog, people
) -> None:
    """The first run's heartbeats are set further apart than ``job_stale_after_s``: from the database's
    side, a worker whose beats could not land. Recovery re-queues the job and a second worker runs it
    on the listing's newer version. The first run's writes used to be conditional on RUNNING only (which
    the second run's claim had made it again): it stored its progress and result, made the job final
    with its own (older) outputs, and the second run's outcome was dropped."""
    published = await publish_model(
        fencing_settings, catalog, people["producer"], SLOW_MODEL.replace("LABEL", "positive"), timeout_s=30
    )
    async with (
        job_service(fencing_settings, catalog, job_heartbeat_s=3600.0) as stalled,
        job_service(fencing_settings, catalog, job_heartbeat_s=0.2) as second,
    ):
        view = await stalled.submit(people["alice"], published.listing_id, "inference", records=["a", "b"])
        newer = SLOW_MODEL.replace("LABEL", "negative")
        outcomes = await recovered_and_run_again(
            stalled,
            second,
            view.id,
            add_version(fencing_settings, catalog, published.listing_id, newer, "1.0.1"),
        )

    assert outcomes == (SUPERSEDED, JobStatus.SUCCEEDED.value)
    final = await second.get(people["alice"], view.id)
    assert (final.status, final.attempts, final.metrics["version"]) == (JobStatus.SUCCEEDED, 2, "1.0.1")
    assert [r["output"]["label"] for r in await second.all_outputs(final)] == ["negative", "negative"]
    assert final.progress["records_done"] == 2
    async with catalog.db.session() as session:  # counted once: by the run that made it final
        assert (await session.get(Listing, published.listing_id)).usage_count == 1


async def test_a_training_run_taken_over_by_recovery_leaves_no_model_behind(
    fencing_settings: Settings, catalog, people
) -> None:
    """The first run's trained model was written as a listing whatever became of its claim: the second
    run, training meanwhile, then failed on the name the first had taken ("already exists"). The model's
    listing is now written only while the run holds the job, in the same transaction."""
    algorithm = await publish_model(
        fencing_settings, catalog, people["producer"], SLOW_ALGORITHM, kind="algorithm", trainable=True
    )
    examples = [{"input": f"review {i}", "target": "positive"} for i in range(3)]
    async with (
        job_service(fencing_settings, catalog, job_heartbeat_s=3600.0) as stalled,
        job_service(fencing_settings, catalog, job_heartbeat_s=0.2) as second,
    ):
        view = await stalled.submit(people["alice"], algorithm.listing_id, "training", records=examples)
        outcomes = await recovered_and_run_again(stalled, second, view.id)

    assert outcomes == (SUPERSEDED, JobStatus.SUCCEEDED.value)
    final = await second.get(people["alice"], view.id)
    async with catalog.db.session() as session:
        models = (
            await session.scalars(select(Listing.id).where(Listing.owner_id == people["alice"].account_id))
        ).all()
    assert models == [final.result["trained_listing_id"]]


async def test_a_run_whose_job_was_claimed_again_stops_at_its_next_heartbeat(
    fencing_settings: Settings, catalog, people
) -> None:
    """A live run learns at its next heartbeat that the job is another run's: its sandbox is stopped and
    it writes nothing. It used to beat on (its beat only looked for a cancel), run its sandbox to the
    end and then write its outcome over the new run's."""
    published = await publish_model(
        fencing_settings, catalog, people["producer"], ASLEEP_MODEL, timeout_s=120
    )
    async with (
        job_service(fencing_settings, catalog, job_heartbeat_s=0.2) as first,
    ):
        second = JobService(fencing_settings, catalog, queue=DroppingQueue())  # the test claims for it
        view = await first.submit(people["alice"], published.listing_id, "inference", records=["a"])
        [first_run] = list(first.queue.tasks)
        await running_attempt(first, view.id, 1)
        for _ in range(200):  # recovery takes it: its last beat made to look old (a pause, an outage)
            async with catalog.db.session() as session:
                await session.execute(
                    update(Job).where(Job.id == view.id).values(heartbeat_at=utcnow().replace(year=2000))
                )
            if (await second.reconcile())["requeued"]:
                break
        taken = await second.claim(view.id)
        assert taken is not None and taken.attempts == 2
        assert await asyncio.wait_for(first_run, 15) == SUPERSEDED

    async with catalog.db.session() as session:
        row = await session.get(Job, view.id)
        assert (row.status, row.attempts, row.result, row.finished_at) == (JobStatus.RUNNING, 2, None, None)


async def test_a_final_write_retried_after_it_landed_is_not_taken_for_a_lost_claim(
    fencing_settings: Settings, catalog, people
) -> None:
    """``run`` retries its final write while the database is unreachable; a try whose commit landed but
    whose acknowledgement was lost is followed by one that changes nothing. That must not read as the
    job having been taken from the run (``run`` would report the run superseded and its outcome lost)."""
    jobs = JobService(fencing_settings, catalog, queue=DroppingQueue())
    async with catalog.db.session() as session:
        row = Job(owner_id=people["alice"].account_id, task="inference", status="queued", inputs={})
        session.add(row)
    claim = claim_of(await jobs.claim(row.id))
    assert await jobs.finish(row.id, JobStatus.SUCCEEDED, claim=claim)  # landed; its answer lost
    assert not await jobs.finish(row.id, JobStatus.SUCCEEDED, claim=claim)  # the retry
    assert await jobs._final_under(claim, JobStatus.SUCCEEDED)
    assert not await jobs._final_under(Claim(Job, row.id, claim.attempt + 1), JobStatus.SUCCEEDED)
    assert not await jobs._final_under(claim, JobStatus.FAILED)
