"""The arq worker (``mlrepo worker``): job functions of execution and publishing, and the reconciler.

One worker takes one queue: the resource class it was started for (``MLREPO_WORKER_RESOURCE_CLASS``,
default cpu). cpu jobs share arq's default queue with publishing, so a plain worker does both; gpu workers
take gpu jobs, the publications a cpu worker hands them (a listing that suggests GPUs is verified on one),
and the periodic re-verification of such listings. On startup — and then every minute — the reconciler
re-queues what the database says should run (Redis keeps nothing on disk here) and fails jobs whose worker
was lost too often.

Without ``MLREPO_REDIS_URL`` none of this process exists: ``JobService`` runs the same ``run`` in-process.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
import time
from typing import Any

from arq import cron, func
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.worker import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from catalog.artifact_gc import collect_garbage
from catalog.gc_schedule import GC_MINUTE, gc_hours
from catalog.publishing.jobs import (
    GPU_PUBLISHING_FUNCTIONS,
    PUBLISHING_FUNCTIONS,
    publishing_cron_jobs,
    start_publishing,
    stop_publishing,
)
from executor.allocation import CPU_CLASS, GPU_CLASS, queue_for
from executor.database_watch import DatabaseWatch
from executor.events import RedisJobEvents
from executor.gpus import parse_devices
from executor.job_queues import DEFERRED, ArqJobQueue
from executor.jobs import JobService
from executor.publish_sandbox import ExecutorSandbox
from infra.db import is_unreachable
from infra.errors import Unavailable
from infra.settings import Settings, get_settings

logger = logging.getLogger("mlrepo.worker")

CTX_JOBS = "jobs"
ARQ_MAX_JOBS = 10  # arq's own default
CTX_CATALOG = "catalog"
# Failures that mean Redis went away (restarted, unreachable): the worker is started again.
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)
REDIS_LOST = (*REDIS_ERRORS, OSError)
REDIS_RETRY_FIRST_S = 1.0
REDIS_RETRY_MAX_S = 30.0
NEEDS_REDIS = "mlrepo worker needs MLREPO_REDIS_URL (without Redis, jobs run in the API process)"
# How often a worker records that it lives (arq's health record in Redis, which expires a second later):
# ``mlrepo worker --check`` reads it.
HEALTH_CHECK_INTERVAL_S = 30
# What a worker tells its operator at INFO by default (``mlrepo worker`` without -v; -q silences them):
# that it started and on what, each job and publication claimed and finished, Redis or the database lost
# and back. arq's own lines (every cron run, every deferral) and the libraries' stay at WARNING.
OPERATOR_LOGGERS = ("mlrepo.worker", "mlrepo.executor", "mlrepo.publishing")
# The outage (what was lost, since when) a worker started again after; its startup says it is over.
CTX_OUTAGE = "outage"
# A database lost while the worker runs is logged by this watch (``executor.database_watch``).
CTX_DATABASE_WATCH = "database_watch"


async def run_job(ctx: dict[str, Any], job_id: str) -> str:
    jobs: JobService = ctx[CTX_JOBS]
    outcome = await jobs.run(job_id)
    if outcome == DEFERRED:  # its account runs its most jobs already: back to the queue, for later
        raise Retry(defer=jobs.settings.job_heartbeat_s)
    return outcome


# arq counts a deferral as a try; the database bounds a job's real attempts (``job_max_attempts``), so
# arq must not drop a job that only waited for its account's turn.
RUN_JOB = func(run_job, name="run_job", max_tries=sys.maxsize)


async def reconcile_jobs(ctx: dict[str, Any]) -> dict[str, int]:
    return await ctx[CTX_JOBS].reconcile()


async def collect_artifact_garbage(ctx: dict[str, Any]) -> dict[str, Any]:
    """The periodic ``mlrepo gc --delete`` (``gc_interval_hours``); the report without its digest list."""
    catalog = ctx[CTX_CATALOG]
    report = await collect_garbage(catalog.settings, catalog.db, delete=True)
    return {k: v for k, v in report.as_dict().items() if k != "garbage_digests"}


def gc_cron_jobs(settings: Settings) -> list[CronJob]:
    """Garbage collection (and with it the retention of job outputs) on ``catalog.gc_schedule``'s
    schedule, daily by default (none when ``gc_interval_hours`` is 0), on cpu workers only: ``unique``
    lets one of several workers run each one."""
    hours = gc_hours(settings)
    if not hours:
        return []
    return [cron(collect_artifact_garbage, hour=hours, minute={GC_MINUTE}, run_at_startup=False, unique=True)]


async def start_jobs(ctx: dict[str, Any], settings: Settings, catalog: Any) -> JobService:
    assert settings.redis_url is not None
    service = JobService(
        settings, catalog, events=RedisJobEvents(settings.redis_url), queue=ArqJobQueue(settings.redis_url)
    )
    ctx[CTX_JOBS] = service
    counts = await service.reconcile()
    if any(counts.values()):
        logger.info("reconciled jobs at startup: %s", counts)
    return service


async def stop_jobs(ctx: dict[str, Any]) -> None:
    service: JobService | None = ctx.pop(CTX_JOBS, None)
    if service is not None:
        await service.queue.close()
        await service.events.close()


async def on_startup(ctx: dict[str, Any]) -> None:
    from catalog.app import CatalogApp

    settings: Settings = ctx.get("settings") or get_settings()
    # The worker never holds the embedded index: the API process does (one tantivy writer per directory).
    catalog = await CatalogApp.open(settings, with_index=False)
    ctx[CTX_CATALOG] = catalog
    await start_jobs(ctx, settings, catalog)
    watch = DatabaseWatch(catalog.db, settings.worker_database_check_s)
    watch.start()
    ctx[CTX_DATABASE_WATCH] = watch
    sandbox = ExecutorSandbox(settings)
    await start_publishing(ctx, settings, catalog, sandbox, gpu_queue=queue_for(GPU_CLASS))
    outage = ctx.pop(CTX_OUTAGE, None)
    if outage is not None:
        lost, since = outage
        logger.info("%s is back after %.0f s", lost, time.monotonic() - since)
    logger.info("worker started: %s", describe_worker(settings))


def redis_location(redis_url: str) -> str:
    """host:port/db of a Redis URL, without its password (for logs and messages)."""
    dsn = RedisSettings.from_dsn(redis_url)
    return f"{dsn.host}:{dsn.port}/{dsn.database}"


def describe_worker(settings: Settings) -> str:
    """What this worker takes and from where, in one line (its startup log)."""
    if settings.worker_resource_class == GPU_CLASS:
        devices = settings.gpu_devices or "none"
        work = f"gpu jobs and the publications handed to GPU workers, on GPUs {devices}"
    else:
        work = "cpu jobs and publishing"
    database = settings.resolved_database_url.split("@")[-1]
    queue = queue_for(settings.worker_resource_class)
    return (
        f"queue {queue} ({work}), up to {max_jobs_for(settings)} at once; "
        f"Redis {redis_location(settings.redis_url or '')}; database {database}"
    )


async def on_shutdown(ctx: dict[str, Any]) -> None:
    watch: DatabaseWatch | None = ctx.pop(CTX_DATABASE_WATCH, None)
    if watch is not None:
        await watch.stop()
    await stop_publishing(ctx)
    await stop_jobs(ctx)
    catalog = ctx.pop(CTX_CATALOG, None)
    if catalog is not None:
        await catalog.close()


def max_jobs_for(settings: Settings) -> int:
    """How many jobs this worker takes at once. A GPU worker takes no more than it has GPUs: a job it
    took would otherwise wait here for a device, looking RUNNING, while another GPU worker sat idle."""
    if settings.worker_resource_class == GPU_CLASS:
        return max(1, len(parse_devices(settings.gpu_devices)))
    return ARQ_MAX_JOBS


def health_check_key(settings: Settings) -> str:
    """Where a worker records that it lives: per queue *and host*. arq's default, one key per queue, stays
    fresh while any worker of the queue lives, so a dead or hung worker beside a live one looked healthy
    (in Docker Compose the host name is the container's)."""
    return f"{queue_for(settings.worker_resource_class)}:health-check:{socket.gethostname()}"


def worker_settings(settings: Settings) -> dict[str, Any]:
    """arq ``Worker`` keyword arguments for this deployment (``WorkerSettings`` uses the environment's)."""
    if not settings.redis_url:
        raise Unavailable(NEEDS_REDIS)
    functions: list[Any] = [RUN_JOB, reconcile_jobs]
    cron_jobs = [cron(reconcile_jobs, second={0}, run_at_startup=False, unique=True)]
    if settings.worker_resource_class == CPU_CLASS:
        functions += list(PUBLISHING_FUNCTIONS)
        cron_jobs += publishing_cron_jobs(settings) + gc_cron_jobs(settings)
    elif settings.worker_resource_class == GPU_CLASS:
        functions += list(GPU_PUBLISHING_FUNCTIONS)
        cron_jobs += publishing_cron_jobs(settings, on_gpu_worker=True)
    return {
        "functions": functions,
        "cron_jobs": cron_jobs,
        "queue_name": queue_for(settings.worker_resource_class),
        "max_jobs": max_jobs_for(settings),
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "ctx": {"settings": settings},
        # Jobs bound their own time (MLREPO_JOB_MAX_DURATION_S, at most 23 h); arq's is a last resort.
        "job_timeout": 24 * 3600,
        "max_tries": settings.job_max_attempts,
        "keep_result": 3600,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "health_check_key": health_check_key(settings),
    }


class WorkerSettings:
    """For ``arq executor.worker.WorkerSettings``, configured from the environment (``mlrepo worker``
    builds the same from its own Settings through ``worker_settings``)."""

    _settings = get_settings()
    functions = [RUN_JOB, reconcile_jobs, *dict.fromkeys([*PUBLISHING_FUNCTIONS, *GPU_PUBLISHING_FUNCTIONS])]
    cron_jobs = [
        cron(reconcile_jobs, second={0}, run_at_startup=False, unique=True),
        *publishing_cron_jobs(_settings, on_gpu_worker=_settings.worker_resource_class == GPU_CLASS),
        *(gc_cron_jobs(_settings) if _settings.worker_resource_class == CPU_CLASS else []),
    ]
    queue_name = queue_for(_settings.worker_resource_class)
    max_jobs = max_jobs_for(_settings)
    redis_settings = RedisSettings.from_dsn(_settings.redis_url or "redis://127.0.0.1:6379")
    on_startup = on_startup
    on_shutdown = on_shutdown
    job_timeout = 24 * 3600
    max_tries = _settings.job_max_attempts
    health_check_interval = HEALTH_CHECK_INTERVAL_S
    health_check_key = health_check_key(_settings)


async def worker_health(settings: Settings) -> str:
    """The health record of this host's worker of its queue (``mlrepo worker --check``). ``Unavailable``
    when Redis cannot be reached or holds no fresh record: the worker is down, hung (it writes one every
    ``HEALTH_CHECK_INTERVAL_S`` while it polls) or cannot reach Redis itself."""
    from redis.asyncio import Redis

    if not settings.redis_url:
        raise Unavailable(NEEDS_REDIS)
    key = health_check_key(settings)
    client = Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        record = await client.get(key)
    except REDIS_LOST as exc:
        raise Unavailable(f"cannot reach Redis at {redis_location(settings.redis_url)}: {exc}") from None
    finally:
        await client.aclose()
    if record is None:
        raise Unavailable(
            f"no worker of queue {queue_for(settings.worker_resource_class)} on {socket.gethostname()} has "
            f"recorded its health in the last {HEALTH_CHECK_INTERVAL_S + 1} s: it is down, hung, or cannot "
            "reach Redis"
        )
    return record.decode()


def run_worker(settings: Settings, burst: bool = False) -> None:
    """Run a worker in this process until it is stopped (``burst``: until its queue is empty).

    arq's worker ends, and the process with it, when Redis drops its connection: a Redis restart (which
    the queue survives: the reconciler re-queues from the database) stopped every worker for good. So a
    worker that lost Redis is started again, after a pause that grows while Redis stays away."""
    from arq.worker import Worker

    pause = REDIS_RETRY_FIRST_S
    outage: tuple[str, float] | None = None
    while True:
        worker = Worker(**worker_settings(settings), burst=burst)
        if outage is not None:
            worker.ctx[CTX_OUTAGE] = outage  # its startup, once it gets through, says the outage is over
        started = time.monotonic()
        try:
            worker.run()
            logger.info("worker stopped")
            return  # stopped (a signal) or, in burst mode, done
        except Exception as exc:
            # The database refusing connections (down, restarting) also ends arq's worker, first of all
            # in on_startup: retried the same way, and named as what it is.
            database = not isinstance(exc, REDIS_ERRORS) and is_unreachable(exc)
            if not (database or isinstance(exc, REDIS_LOST)):
                raise
            lost = "the database" if database else "Redis"
            problem = "the database cannot be reached" if database else "lost Redis"
            logger.warning("%s (%s); starting the worker again in %.0f s", problem, exc, pause)
            if outage is None or CTX_OUTAGE not in worker.ctx or outage[0] != lost:
                outage = (lost, time.monotonic())  # a new outage: the last one was announced over
        _release(worker)
        if time.monotonic() - started > REDIS_RETRY_MAX_S:
            pause = REDIS_RETRY_FIRST_S  # it ran a good while: this is a new outage
        time.sleep(pause)
        pause = min(pause * 2, REDIS_RETRY_MAX_S)


def _release(worker: Any) -> None:
    """What a worker whose ``close`` failed on the missing Redis leaves open: its catalog and job services
    (``on_shutdown`` never ran) and arq's signal handlers (they would keep SIGTERM from ending the pause;
    without them the default action stops the process, which has no job left to finish)."""
    with contextlib.suppress(Exception):
        worker.loop.run_until_complete(on_shutdown(worker.ctx))
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(Exception):
            worker.loop.remove_signal_handler(signum)
