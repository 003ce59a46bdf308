"""Jobs through arq on the throwaway redis-server, for real: a worker (in this process, and as a separate
process that gets SIGKILLed mid-job), Redis pub/sub events, and the reconciler after Redis lost its queue.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker
from executor_support import publish_model, watch_all
from sqlalchemy import update

from catalog.enums import JobStatus
from executor.allocation import CPU_CLASS, queue_for
from executor.events import RedisJobEvents
from executor.job_queues import ArqJobQueue
from executor.jobs import JobService
from executor.worker import collect_artifact_garbage, worker_settings
from infra.artifacts import ArtifactStore
from infra.settings import Settings
from infra.tables import Job, utcnow
from tests.job_rows import finished_job
from tests.services import free_port, long_running, require_service

# ``mlrepo worker`` in a process of its own, configured by its environment.
RUN_WORKER = (
    "from executor.worker import run_worker; from infra.settings import Settings; run_worker(Settings())"
)

MODEL = """
import json, sys, time
for line in sys.stdin:
    record = json.loads(line)
    if record["input"].startswith("slow"):
        time.sleep(2)
    print(json.dumps({"id": record["id"], "output": {"label": "positive"}}))
"""


@pytest.fixture
def arq_settings(settings: Settings, redis_url: str, bwrap_runtime) -> Settings:
    return settings.model_copy(
        update={"runtime": "bwrap", "redis_url": redis_url, "job_heartbeat_s": 0.3, "job_stale_after_s": 2.0}
    )


@pytest.fixture
async def arq_jobs(arq_settings: Settings, catalog):
    service = JobService(
        arq_settings,
        catalog,
        events=RedisJobEvents(arq_settings.redis_url),
        queue=ArqJobQueue(arq_settings.redis_url),
    )
    yield service
    await service.queue.close()
    await service.events.close()


def burst_worker(settings: Settings) -> Worker:
    return Worker(**{**worker_settings(settings), "poll_delay": 0.05}, burst=True, handle_signals=False)


async def test_a_job_runs_on_an_arq_worker_and_streams_its_status(
    arq_jobs, arq_settings, catalog, people
) -> None:
    published = await publish_model(arq_settings, catalog, people["producer"], MODEL)
    view = await arq_jobs.submit(people["alice"], published.listing_id, "inference", records=["a", "b", "c"])
    watching = asyncio.create_task(watch_all(arq_jobs, people["alice"], view.id))
    await asyncio.sleep(0.1)
    worker = burst_worker(arq_settings)
    try:
        await worker.main()
    finally:
        await worker.close()
    seen = await asyncio.wait_for(watching, 10)
    statuses = [v.status for v in seen]
    assert statuses[0] == JobStatus.QUEUED and statuses[-1] == JobStatus.SUCCEEDED
    assert JobStatus.RUNNING in statuses
    assert await arq_jobs.all_outputs(seen[-1]) == [{"output": {"label": "positive"}}] * 3


async def test_jobs_redis_lost_are_requeued_by_the_reconciler(
    arq_jobs, arq_settings, catalog, people, redis_url
) -> None:
    published = await publish_model(arq_settings, catalog, people["producer"], MODEL)
    view = await arq_jobs.submit(people["alice"], published.listing_id, "inference", records=["a"])
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    subprocess.run(["redis-cli", "-p", port, "FLUSHALL"], check=True, capture_output=True)  # Redis restarted
    assert (await arq_jobs.reconcile())["requeued"] == 1
    worker = burst_worker(arq_settings)
    try:
        await worker.main()
    finally:
        await worker.close()
    assert (await arq_jobs.get(people["alice"], view.id)).status == JobStatus.SUCCEEDED


async def test_a_worker_killed_mid_job_leaves_no_job_running_forever(
    arq_jobs, arq_settings, catalog, people
) -> None:
    published = await publish_model(arq_settings, catalog, people["producer"], MODEL, timeout_s=30)
    view = await arq_jobs.submit(people["alice"], published.listing_id, "inference", records=["slow"] * 3)
    env = {
        **os.environ,
        "MLREPO_DATA_DIR": str(arq_settings.data_dir),
        "MLREPO_DATABASE_URL": arq_settings.resolved_database_url,
        "MLREPO_REDIS_URL": arq_settings.redis_url,
        "MLREPO_RUNTIME": "bwrap",
        "MLREPO_JOB_HEARTBEAT_S": "0.3",
    }
    worker = subprocess.Popen([sys.executable, "-c", RUN_WORKER], env=env, start_new_session=True)
    try:
        for _ in range(600):
            if (await arq_jobs.get(people["alice"], view.id)).status == JobStatus.RUNNING:
                break
            await asyncio.sleep(0.05)
        assert (await arq_jobs.get(people["alice"], view.id)).status == JobStatus.RUNNING
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its sandbox die mid-job
    finally:
        worker.kill()
        worker.wait()

    assert (await arq_jobs.reconcile())["requeued"] == 0  # its heartbeat is still fresh
    async with catalog.db.session() as session:
        stale = utcnow() - timedelta(seconds=10)
        await session.execute(update(Job).where(Job.id == view.id).values(heartbeat_at=stale))
    assert (await arq_jobs.reconcile())["requeued"] == 1
    lost = await arq_jobs.get(people["alice"], view.id)
    assert lost.status == JobStatus.QUEUED and "worker lost during attempt 1" in lost.logs

    # A long-running worker (not burst: the dead worker's arq entry stays "in progress" until arq's own
    # job timeout, and our claim makes that stale entry a no-op when it comes back).
    survivor = Worker(**{**worker_settings(arq_settings), "poll_delay": 0.05}, handle_signals=False)
    async with long_running(survivor):
        for _ in range(400):
            if (await arq_jobs.get(people["alice"], view.id)).is_final:
                break
            await asyncio.sleep(0.05)
    final = await arq_jobs.get(people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED and final.attempts == 2


async def test_a_job_lost_too_often_fails_with_its_reason(arq_jobs, arq_settings, catalog, people) -> None:
    published = await publish_model(arq_settings, catalog, people["producer"], MODEL)
    view = await arq_jobs.submit(people["alice"], published.listing_id, "inference", records=["a"])
    async with catalog.db.session() as session:
        await session.execute(
            update(Job)
            .where(Job.id == view.id)
            .values(
                status="running",
                attempts=arq_settings.job_max_attempts,
                heartbeat_at=utcnow() - timedelta(minutes=5),
            )
        )
    assert (await arq_jobs.reconcile()) == {"requeued": 0, "failed": 1}
    final = await arq_jobs.get(people["alice"], view.id)
    assert final.status == JobStatus.FAILED
    assert final.error == "the worker running this job was lost 3 times; giving up"


def test_the_arq_entry_point_schedules_what_mlrepo_worker_schedules(arq_settings: Settings) -> None:
    """``arq executor.worker.WorkerSettings`` scheduled job reconciliation only: no re-verification and
    no recovery of lost publications, unlike ``mlrepo worker`` whose settings it claims to mirror."""
    from executor.worker import WorkerSettings

    cpu = arq_settings.model_copy(update={"worker_resource_class": "cpu"})
    names = {job.name for job in worker_settings(cpu)["cron_jobs"]}
    assert {job.name for job in WorkerSettings.cron_jobs} == names
    # On the default garbage collection schedule too, which the test suite turns off: WorkerSettings
    # reads the environment when imported, so a process of its own imports it with the default.
    env = {**os.environ, "MLREPO_GC_INTERVAL_HOURS": "24", "MLREPO_WORKER_RESOURCE_CLASS": "cpu"}
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from executor.worker import WorkerSettings as W; print(*(j.name for j in W.cron_jobs))",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    daily = {
        job.name for job in worker_settings(cpu.model_copy(update={"gc_interval_hours": 24}))["cron_jobs"]
    }
    assert set(listed.stdout.split()) == daily and "cron:collect_artifact_garbage" in daily


async def test_jobs_past_the_account_limit_wait_their_turn_on_arq(arq_settings, catalog, people) -> None:
    """A job its account may not start yet goes back to arq, deferred, as often as it takes: not
    counted against arq's tries (it would be dropped after ``job_max_attempts`` deferrals)."""
    limited = arq_settings.model_copy(update={"job_max_running_per_account": 1, "job_max_attempts": 1})
    jobs = JobService(limited, catalog, queue=ArqJobQueue(limited.redis_url))
    try:
        published = await publish_model(limited, catalog, people["producer"], MODEL)
        views = [
            await jobs.submit(people["alice"], published.listing_id, "inference", records=[f"r{i}"])
            for i in range(3)
        ]
        worker = burst_worker(limited)
        try:
            await worker.main()
        finally:
            await worker.close()
        finals = [await jobs.get(people["alice"], view.id) for view in views]
    finally:
        await jobs.queue.close()
    assert [f.status for f in finals] == [JobStatus.SUCCEEDED] * 3, [f.error for f in finals]
    ran = sorted(finals, key=lambda f: f.started_at)
    assert all(a.finished_at <= b.started_at for a, b in itertools.pairwise(ran))  # one at a time


def test_garbage_collection_on_the_worker_runs_daily_unless_told_otherwise(settings: Settings) -> None:
    """Off by default, it never applied the retention of job outputs in a default deployment."""
    base = settings.model_copy(
        update={"redis_url": "redis://127.0.0.1:1", "worker_resource_class": "cpu", "gc_interval_hours": 24}
    )  # the default, which the test suite turns off (tests/conftest.py)
    daily = {job.name: job for job in worker_settings(base)["cron_jobs"]}["cron:collect_artifact_garbage"]
    assert (daily.hour, daily.minute) == ({0}, {43})
    never = base.model_copy(update={"gc_interval_hours": 0})
    assert "cron:collect_artifact_garbage" not in {job.name for job in worker_settings(never)["cron_jobs"]}
    every_6h = base.model_copy(update={"gc_interval_hours": 6})
    by_name = {job.name: job for job in worker_settings(every_6h)["cron_jobs"]}
    assert by_name["cron:collect_artifact_garbage"].hour == {0, 6, 12, 18}
    gpu = every_6h.model_copy(update={"worker_resource_class": "gpu"})
    assert "cron:collect_artifact_garbage" not in {job.name for job in worker_settings(gpu)["cron_jobs"]}


async def test_the_workers_garbage_collection_deletes(settings: Settings, catalog, people) -> None:
    """It also drops the outputs of jobs finished longer than the retention ago (their blobs go too)."""
    store = ArtifactStore.from_settings(settings)
    old = store.put_bytes(b"outputs of a job that crashed")
    expired = store.put_bytes(b'{"output":"of a job finished long ago"}\n')
    then = time.time() - 2 * settings.gc_grace_s
    for blob in (old, expired):
        os.utime(blob.path, (then, then))
    days_ago = settings.job_output_retention_days + 1
    async with catalog.db.session() as session:
        session.add(finished_job(people["alice"].account_id, expired.digest, days_ago))
    report = await collect_artifact_garbage({"catalog": catalog})
    assert report["deleted"] is True and report["garbage"]["files"] == 2
    assert report["expired_outputs"] == 1
    assert not store.exists(old.digest) and not store.exists(expired.digest)


def _redis_server(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _reconciled_through(redis_url: str) -> dict:
    """A job only a live worker answers: the reconciler, through the cpu queue."""
    for _ in range(100):  # redis-server takes a moment to listen
        try:
            pool = await create_pool(RedisSettings.from_dsn(redis_url))
            break
        except Exception:
            await asyncio.sleep(0.1)
    try:
        job = await pool.enqueue_job("reconcile_jobs", _queue_name=queue_for(CPU_CLASS))
        assert job is not None
        return await job.result(timeout=60, poll_delay=0.1)
    finally:
        await pool.aclose()


async def test_a_worker_carries_on_after_redis_restarts(sqlite_settings: Settings) -> None:
    """Redis keeps nothing on disk and may restart under running workers: arq's worker exits when its
    connection drops, which stopped every ``mlrepo worker`` until someone restarted them by hand."""
    require_service("Redis", shutil.which("redis-server") is not None, "redis-server is not installed")
    port = free_port()  # a server of its own: the session's is shared with other tests
    redis_url = f"redis://127.0.0.1:{port}/0"
    redis = _redis_server(port)
    env = {
        **os.environ,
        "MLREPO_DATA_DIR": str(sqlite_settings.data_dir),
        "MLREPO_DATABASE_URL": sqlite_settings.resolved_database_url,
        "MLREPO_REDIS_URL": redis_url,
    }
    worker = subprocess.Popen([sys.executable, "-c", RUN_WORKER], env=env, start_new_session=True)
    try:
        assert await _reconciled_through(redis_url) == {"requeued": 0, "failed": 0}
        redis.terminate()
        redis.wait(timeout=10)
        await asyncio.sleep(0.5)  # the worker's next poll finds Redis gone
        redis = _redis_server(port)
        assert await _reconciled_through(redis_url) == {"requeued": 0, "failed": 0}
        assert worker.poll() is None
        worker.terminate()  # and a stop signal still stops it
        assert worker.wait(timeout=30) is not None
    finally:
        worker.kill()
        worker.wait()
        redis.terminate()
        redis.wait(timeout=10)


async def test_a_worker_waits_for_its_database_and_says_so(tmp_path, redis_url: str) -> None:
    """A worker started while PostgreSQL is down (a host reboot brings Redis up first) retries, as for
    Redis, but its log said "lost Redis" about the database's refused connection: an operator looked for
    the fault in the wrong service."""
    env = {
        **os.environ,
        "MLREPO_DATA_DIR": str(tmp_path),
        "MLREPO_DATABASE_URL": f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none",
        "MLREPO_REDIS_URL": redis_url,
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-c", RUN_WORKER], env=env, start_new_session=True, stderr=log_file
        )
    try:
        deadline = time.monotonic() + 60  # the import of the model libraries alone takes seconds
        while log_path.read_text().count("starting the worker again") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert worker.poll() is None  # still waiting, not crashed
    finally:
        worker.kill()
        worker.wait()
    log = log_path.read_text()
    assert log.count("the database cannot be reached") >= 2, log
    assert "lost Redis" not in log, log
