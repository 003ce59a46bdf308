"""The publish job through arq on a real redis-server, and recovery of publications a crash left behind."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

from arq.connections import RedisSettings
from arq.worker import Worker, func
from publishing_support import PREDICT, REPO, package_files, sentiment_manifest, zip_bytes
from redis.asyncio import Redis
from sqlalchemy import select, update

from api.graphql.publishing import recover_forever
from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.publishing.jobs import (
    PUBLISHING_FUNCTIONS,
    publishing_cron_jobs,
    reverify_job,
    start_publishing,
    stop_publishing,
)
from catalog.publishing.service import ArqQueue, PublicationView, PublishingService
from catalog.search_service import SearchRequest
from executor.publish_sandbox import ExecutorSandbox
from infra.settings import Settings
from infra.tables import ListingVersion, Publication, utcnow
from tests.services import long_running

# ``mlrepo worker`` in a process of its own, configured by its environment.
RUN_WORKER = (
    "from executor.worker import run_worker; from infra.settings import Settings; run_worker(Settings())"
)


class Dropped:
    """A queue that loses every job (Redis restarted with nothing on disk)."""

    def __init__(self) -> None:
        self.lost: list[str] = []

    async def enqueue(self, publication_id: str, delivery: int = 0, on_gpu: bool = False) -> None:
        self.lost.append(publication_id)

    async def gpu_workers_alive(self) -> bool:
        return False


async def run_worker(redis_url: str, service: PublishingService) -> None:
    worker = Worker(
        functions=[func(f, name=f.__name__) for f in PUBLISHING_FUNCTIONS],
        redis_settings=RedisSettings.from_dsn(redis_url),
        burst=True,
        poll_delay=0.05,
        ctx={"publishing": service},
        handle_signals=False,
    )
    try:
        await worker.main()
    finally:
        await worker.close()


async def until_finished(service: PublishingService, owner: Actor, publication_id: str) -> None:
    """Return once the publication is PUBLISHED or FAILED (or after a minute: the caller's assert says)."""
    for _ in range(1200):
        if (await service.get(owner, publication_id)).status in ("published", "failed"):
            return
        await asyncio.sleep(0.05)


def service_with(settings: Settings, app: CatalogApp, queue) -> PublishingService:
    return PublishingService(
        settings.model_copy(update={"runtime": "bwrap"}),
        app.db,
        app.listings,
        ExecutorSandbox(settings),
        queue=queue,
    )


async def submit_slow(
    settings: Settings, app: CatalogApp, owner: Actor, queue, sleep_s: float, **manifest: object
) -> PublicationView:
    """A package whose test step sleeps ``sleep_s`` before answering (no verify step)."""
    files = package_files(
        sentiment_manifest(verify=False, **manifest),
        predict=f"import time\ntime.sleep({sleep_s})\n" + PREDICT,
    )
    return await service_with(settings, app, queue).submit_package(owner, io.BytesIO(zip_bytes(files)))


def worker_env(settings: Settings, redis_url: str, heartbeat_s: float) -> dict[str, str]:
    """The environment of an ``mlrepo worker`` process on ``settings``' data and database."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MLREPO_DATA_DIR": str(settings.data_dir),
        "MLREPO_DATABASE_URL": settings.resolved_database_url,
        "MLREPO_REDIS_URL": redis_url,
        "MLREPO_RUNTIME": "bwrap",
        "MLREPO_JOB_HEARTBEAT_S": str(heartbeat_s),
        "MLREPO_JOB_STALE_AFTER_S": str(settings.job_stale_after_s),
    }


async def until_testing(service: PublishingService, owner: Actor, publication_id: str) -> None:
    """Return once the publication's test step runs (its sandbox started)."""
    for _ in range(1200):
        steps = {s.name: s.status for s in (await service.get(owner, publication_id)).steps}
        if steps["test"] == "running":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the test step never ran: {steps}")


async def test_publish_job_runs_on_an_arq_worker(
    settings: Settings, app: CatalogApp, alice: Actor, redis_url: str, bwrap_ok: bool
) -> None:
    queue = ArqQueue(redis_url)
    service = service_with(settings, app, queue)
    try:
        pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
        assert pub.status == "queued"
        await run_worker(redis_url, service)
    finally:
        await queue.close()
    done = await service.get(alice, pub.id)
    assert done.status == "published", done.error
    assert (await app.listings.get(alice, done.listing_id)).verification_status == "verified"
    found = await app.search.search(alice, SearchRequest(text="is this review positive or negative"))
    assert done.listing_id in [hit.listing.id for hit in found.results]


async def test_recover_requeues_what_redis_lost_or_a_crash_left_running(
    settings: Settings, app: CatalogApp, alice: Actor, redis_url: str, bwrap_ok: bool
) -> None:
    dropped = Dropped()
    lost = await service_with(settings, app, dropped).submit_package(
        alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest())))
    )
    crashed = await service_with(settings, app, dropped).submit_package(
        alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest(name="other-sentiment"))))
    )
    async with app.db.session() as session:  # a worker died in the middle of this one
        row = await session.get(Publication, crashed.id)
        row.status, row.updated_at = "running", utcnow() - timedelta(hours=1)

    ctx: dict = {}
    worker_settings = settings.model_copy(update={"runtime": "bwrap", "redis_url": redis_url})
    service = await start_publishing(ctx, worker_settings, app, ExecutorSandbox(worker_settings))
    try:
        assert ctx["publishing"] is service and isinstance(service.queue, ArqQueue)
        await run_worker(redis_url, service)
    finally:
        await stop_publishing(ctx)
    for pub in (lost, crashed):
        assert (await service.get(alice, pub.id)).status == "published"


async def test_reverify_job_and_its_schedule(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool
) -> None:
    service = service_with(settings, app, None)
    pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    await service.queue.drain()
    results = await reverify_job({"publishing": service})
    assert results == [
        {"listing_id": (await service.get(alice, pub.id)).listing_id, "outcome": "verified", "problems": []}
    ]
    [daily] = [job for job in publishing_cron_jobs(settings) if job.coroutine is reverify_job]
    assert daily.hour == {3}
    hourly_settings = settings.model_copy(update={"verify_interval_s": 3600})
    [hourly] = [job for job in publishing_cron_jobs(hourly_settings) if job.coroutine is reverify_job]
    assert hourly.hour == set(range(24))


async def test_a_live_running_publication_is_not_taken_twice(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool
) -> None:
    dropped = Dropped()
    service = service_with(settings, app, dropped)
    pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    async with app.db.session() as session:
        (await session.get(Publication, pub.id)).status = "running"  # a live worker has it
    assert await service.recover() == 0
    assert await service.run(pub.id) == "skipped"  # the duplicate delivery does not claim it
    assert (await service.get(alice, pub.id)).status == "running"


async def test_a_publication_whose_worker_was_killed_is_published_by_another(
    settings: Settings, app: CatalogApp, alice: Actor, redis_url: str, bwrap_ok: bool
) -> None:
    """A worker killed mid-publication leaves its arq job in Redis, marked in progress until arq's own job
    timeout (a day). Recovery used to re-enqueue it under the same arq job id, which arq dedupes: the
    publication stayed QUEUED and no worker ran it."""
    queue = ArqQueue(redis_url)
    try:
        pub = await service_with(settings, app, queue).submit_package(
            alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest())))
        )
    finally:
        await queue.close()
    redis = Redis.from_url(redis_url)
    try:  # what arq writes when a worker takes the job; the worker then dies without a word
        await redis.set(f"arq:in-progress:publish:{pub.id}", b"1", px=24 * 3600 * 1000)
    finally:
        await redis.aclose()
    async with app.db.session() as session:
        row = await session.get(Publication, pub.id)
        row.status, row.updated_at = "running", utcnow() - timedelta(hours=1)

    ctx: dict = {}
    worker_settings = settings.model_copy(update={"runtime": "bwrap", "redis_url": redis_url})
    service = await start_publishing(ctx, worker_settings, app, ExecutorSandbox(worker_settings))
    survivor = Worker(
        functions=[func(f, name=f.__name__) for f in PUBLISHING_FUNCTIONS],
        redis_settings=RedisSettings.from_dsn(redis_url),
        poll_delay=0.05,
        ctx={"publishing": service},
        handle_signals=False,
    )
    try:
        async with long_running(survivor):  # not burst: the dead worker's entry never leaves
            await until_finished(service, alice, pub.id)
    finally:
        await stop_publishing(ctx)
    done = await service.get(alice, pub.id)
    assert done.status == "published", (done.status, done.error)


async def test_a_publication_lost_after_the_worker_started_is_recovered_later(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool
) -> None:
    """Start-up recovery only takes publications stale by then; a worker restarted at once (or another
    worker dying later) used to leave its publication RUNNING forever: nothing looked again."""
    dropped = Dropped()
    service = service_with(settings, app, dropped)
    pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    async with app.db.session() as session:  # its worker died a moment ago: not stale at start-up
        (await session.get(Publication, pub.id)).status = "running"
    assert await service.recover() == 0
    async with app.db.session() as session:  # ... and the periodic recovery finds it once it is
        (await session.get(Publication, pub.id)).updated_at = utcnow() - timedelta(hours=1)
    [recovery] = [job for job in publishing_cron_jobs(settings) if job.coroutine is not reverify_job]
    assert await recovery.coroutine({"publishing": service}) == 1
    assert (await service.get(alice, pub.id)).status == "queued" and dropped.lost[-1] == pub.id


async def test_a_publication_submitted_while_redis_is_down_is_accepted_for_recovery(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool
) -> None:
    """The publication and its staged upload were written, then handing it to Redis failed: the
    producer got an INTERNAL error for a publication that existed and would run once recovered."""
    queue = ArqQueue("redis://127.0.0.1:1")  # nothing listens there
    service = service_with(settings, app, queue)
    pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    assert (await service.get(alice, pub.id)).status == "queued"


async def test_without_redis_the_api_process_keeps_recovering_lost_publications(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool
) -> None:
    """Without Redis the API process recovered only at its start, which passes over publications not yet
    stale then (a crash shortly before the restart, or another process sharing the database): those
    stayed RUNNING forever."""
    pub = await service_with(settings, app, Dropped()).submit_package(
        alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest())))
    )
    async with app.db.session() as session:  # a process died running it a while ago
        row = await session.get(Publication, pub.id)
        row.status, row.updated_at = "running", utcnow() - timedelta(hours=1)
    service = service_with(settings, app, None)
    recovering = asyncio.create_task(recover_forever(service, period_s=0.05))
    try:
        await until_finished(service, alice, pub.id)
    finally:
        recovering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recovering
        await service.queue.drain()
    assert (await service.get(alice, pub.id)).status == "published"


async def test_a_publication_that_keeps_killing_its_worker_fails_after_bounded_runs(
    settings: Settings, app: CatalogApp, alice: Actor
) -> None:
    """A package that takes its worker down every time was recovered forever (one more run every
    15 minutes); like a job, it now gets ``job_max_attempts`` runs, then FAILS with the reason."""
    dropped = Dropped()
    service = service_with(settings, app, dropped)
    pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    runs = settings.job_max_attempts
    for run in range(1, runs + 1):  # a worker takes it, starts a step and dies mid-step
        async with app.db.session() as session:
            row = await session.get(Publication, pub.id)
            assert row.status == "queued", (run, row.status, row.error)
            row.status, row.updated_at = "running", utcnow() - timedelta(hours=1)
            row.steps = [
                {**step, "status": "running"} if step["name"] == "package" else step for step in row.steps
            ]
        await service.recover()
    failed = await service.get(alice, pub.id)
    assert failed.status == "failed"
    assert f"lost {runs} times" in failed.error
    assert [s.status for s in failed.steps if s.name == "package"] == ["failed"]
    assert await service.recover() == 0  # and stays failed
    async with app.db.session() as session:
        row = await session.get(Publication, pub.id)
        assert row.upload_path is None and row.status == "failed"


async def test_a_publication_whose_worker_died_after_unpacking_it_is_published_on_its_next_run(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool
) -> None:
    """A worker killed mid-publication (kill -9: no cleanup) leaves the upload unpacked in the
    publication's staging directory. The recovered run unpacked it again into the same place, failed on
    the leftover (FileExistsError) and FAILED the publication as an internal error in step package."""
    service = service_with(settings, app, Dropped())
    pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    leftover = service.workflow.staging_root / pub.id / "1" / "src"  # what the dead first run unpacked
    leftover.mkdir(parents=True)
    (leftover / "model.py").write_text("half-written")
    async with app.db.session() as session:
        row = await session.get(Publication, pub.id)
        row.status, row.updated_at, row.attempts = "running", utcnow() - timedelta(hours=1), 1

    assert await service.recover() == 1
    await service.run(pub.id)
    done = await service.get(alice, pub.id)
    assert done.status == "published", (done.status, done.error)
    assert not leftover.exists()


async def test_a_publication_whose_worker_process_was_killed_is_recovered_a_few_heartbeats_later(
    settings: Settings, app: CatalogApp, alice: Actor, redis_url: str, bwrap_ok: bool
) -> None:
    """Publications had no heartbeat: one whose worker was killed waited 15 minutes without a change of
    its record before recovery took it up. Now a live worker's step may run past ``job_stale_after_s``
    without being taken from it, and a killed worker's publication is re-queued once its heartbeat is
    that old."""
    beats = settings.model_copy(
        update={"runtime": "bwrap", "redis_url": redis_url, "job_heartbeat_s": 0.3, "job_stale_after_s": 2.0}
    )
    queue = ArqQueue(redis_url)
    try:  # its test step outlasts job_stale_after_s
        pub = await submit_slow(beats, app, alice, queue, sleep_s=8)
    finally:
        await queue.close()
    service = service_with(beats, app, Dropped())  # this process recovers; the worker process runs it
    env = worker_env(beats, redis_url, heartbeat_s=0.3)
    worker = subprocess.Popen([sys.executable, "-c", RUN_WORKER], env=env, start_new_session=True)
    try:
        await until_testing(service, alice, pub.id)
        await asyncio.sleep(beats.job_stale_after_s + 0.5)
        await service.recover()  # the step runs on, and its worker beats: not lost
        assert (await service.get(alice, pub.id)).status == "running"
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its sandbox die mid-step
        killed = time.monotonic()
    finally:
        worker.kill()
        worker.wait()

    await service.recover()
    assert (await service.get(alice, pub.id)).status == "running"  # its last beat is still fresh
    while (await service.get(alice, pub.id)).status == "running" and time.monotonic() - killed < 30:
        await service.recover()
        await asyncio.sleep(0.1)
    recovered_after = time.monotonic() - killed
    print(f"publication re-queued {recovered_after:.1f} s after its worker was killed")
    assert (await service.get(alice, pub.id)).status == "queued"
    assert recovered_after < beats.job_stale_after_s + 5

    assert await service.run(pub.id) == "published"  # the next run starts over and publishes it


async def test_a_run_taken_over_by_recovery_leaves_the_publication_and_the_files_to_the_new_run(
    settings: Settings, app: CatalogApp, alice: Actor, redis_url: str, bwrap_ok: bool, tmp_path
) -> None:
    """A worker process whose heartbeats do not land (here: set further apart than
    ``job_stale_after_s``; a database outage or a long pause does the same) is recovered from while its
    test step still runs, and a second worker runs the publication again. Both runs shared one staging
    directory and the first wrote on as if nothing had happened: it stored and listed the second run's
    files, recorded PUBLISHED, then removed the staging directory under the second run, which FAILED on
    the missing package and recorded that over it. Each run now has a directory of its own and writes
    only while the publication carries its claim: the first stops at its next write, and says so."""
    beats = settings.model_copy(
        update={"runtime": "bwrap", "redis_url": redis_url, "job_heartbeat_s": 0.3, "job_stale_after_s": 2.0}
    )
    queue = ArqQueue(redis_url)
    try:  # its test step outlasts job_stale_after_s
        pub = await submit_slow(beats, app, alice, queue, sleep_s=6, timeout_s=30)
    finally:
        await queue.close()
    second = service_with(beats, app, Dropped())  # this process recovers, then runs it as a second worker
    env = worker_env(beats, redis_url, heartbeat_s=3600)  # its beats never land in time
    env["MLREPO_JOB_STALE_AFTER_S"] = "7200"  # its own limit above its beats (refused otherwise)
    log = tmp_path / "first-worker.log"
    with open(log, "wb") as out:
        first = subprocess.Popen(
            [sys.executable, "-c", RUN_WORKER], env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        await until_testing(second, alice, pub.id)
        while (await second.get(alice, pub.id)).status != "queued":  # its heartbeat looks stopped
            await second.recover()
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(second.run(pub.id), 120) == "published"
        for _ in range(200):  # the first run has ended its sandbox by now: it stops at its next write
            if b"superseded" in log.read_bytes():
                break
            await asyncio.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait()
    assert b"publications " + pub.id.encode() + b" run 1 was superseded" in log.read_bytes()

    done = await second.get(alice, pub.id)
    assert (done.status, done.error, done.version) == ("published", None, "1.0.0"), done.error
    assert [s.status for s in done.steps] == ["succeeded", "succeeded", "skipped", "succeeded", "succeeded"]
    async with app.db.session() as session:
        row = await session.get(Publication, pub.id)
        versions = await session.scalars(
            select(ListingVersion.version).where(ListingVersion.listing_id == done.listing_id)
        )
        assert (row.attempts, row.upload_path, list(versions)) == (2, None, ["1.0.0"])
    assert not (second.workflow.staging_root / pub.id).exists()  # each run removed its own directory
    assert not (second.upload_root / pub.id).exists()


async def test_a_run_whose_publication_was_re_queued_stops_at_its_next_heartbeat(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool
) -> None:
    """Recovery re-queues a publication whose last beat it finds old (a pause, an outage), while its run
    goes on. The run's beat used to refresh only a RUNNING row and carry on regardless: it ran its step
    to the end and wrote on. Now its next beat finds the publication no longer its own: the sandbox is
    stopped, nothing more recorded, its own staging directory removed, and the upload left for the
    next run."""
    beats = settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})
    service = service_with(beats, app, Dropped())
    pub = await submit_slow(beats, app, alice, Dropped(), sleep_s=60, timeout_s=120)
    first = asyncio.create_task(service.run(pub.id))
    await until_testing(service, alice, pub.id)
    for _ in range(200):  # its last beat made to look old, as recovery sees a worker that could not beat
        async with app.db.session() as session:
            await session.execute(
                update(Publication)
                .where(Publication.id == pub.id)
                .values(heartbeat_at=utcnow() - timedelta(hours=1))
            )
        await service.recover()
        if (await service.get(alice, pub.id)).status == "queued":
            break
    assert await asyncio.wait_for(first, 15) == "superseded"
    view = await service.get(alice, pub.id)
    assert (view.status, {s.name: s.status for s in view.steps}["test"]) == ("queued", "running")
    assert not (service.workflow.staging_root / pub.id).exists()
    assert (service.upload_root / pub.id / "upload").is_file()  # the next run starts from it
