"""arq job functions of publishing, for the worker's ``WorkerSettings`` (``executor/worker.py``).

The worker lists ``PUBLISHING_FUNCTIONS`` in ``functions`` and ``publishing_cron_jobs(settings)`` in
``cron_jobs``; its ``on_startup`` calls ``start_publishing(ctx, settings, catalog, sandbox)`` (the sandbox is
the executor's ``ExecutorSandbox``: the catalog may not import the executor) and its ``on_shutdown``
calls ``stop_publishing(ctx)``. Start-up also re-queues what the database says is unfinished, since Redis
keeps nothing across restarts.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from arq import cron
from arq.cron import CronJob

from catalog.publishing.sandbox import Sandbox
from catalog.publishing.service import ArqQueue, PublishingService
from infra.settings import Settings

if TYPE_CHECKING:
    from catalog.app import CatalogApp

CTX_KEY = "publishing"


async def publish_job(ctx: dict[str, Any], publication_id: str) -> str:
    """Run one publication to PUBLISHED or FAILED (the outcome is recorded on the publication)."""
    return await ctx[CTX_KEY].run(publication_id)


async def reverify_job(ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """Re-run every verified listing's unit tests; listings whose behaviour changed are SUSPENDED."""
    results = await ctx[CTX_KEY].verify_all()
    return [asdict(r) for r in results]


async def reverify_gpu_job(ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """The GPU workers' share of re-verification: the verified listings that suggest GPUs."""
    results = await ctx[CTX_KEY].verify_all(gpu_listings_only=True)
    return [asdict(r) for r in results]


async def recover_job(ctx: dict[str, Any]) -> int:
    """Re-queue publications whose worker was lost since start-up (start-up recovery sees only those
    stale by then); returns how many publications are queued."""
    return await ctx[CTX_KEY].recover()


PUBLISHING_FUNCTIONS = (publish_job, reverify_job, recover_job)
# A GPU worker runs the publications handed to it and re-verifies the listings that suggest GPUs.
GPU_PUBLISHING_FUNCTIONS = (publish_job, reverify_gpu_job)


def publishing_cron_jobs(settings: Settings, on_gpu_worker: bool = False) -> list[CronJob]:
    """Re-verification on the hours implied by ``verify_interval_s`` (at least hourly, at most daily), and
    (on cpu workers) recovery of lost publications every minute."""
    hours_apart = min(max(settings.verify_interval_s // 3600, 1), 24)
    hours = set(range(0, 24, hours_apart)) if hours_apart < 24 else {3}
    if on_gpu_worker:
        return [cron(reverify_gpu_job, hour=hours, minute={17}, run_at_startup=False, unique=True)]
    return [
        cron(reverify_job, hour=hours, minute={17}, run_at_startup=False, unique=True),
        cron(recover_job, second={30}, run_at_startup=False, unique=True),
    ]


async def start_publishing(
    ctx: dict[str, Any],
    settings: Settings,
    catalog: CatalogApp,
    sandbox: Sandbox,
    gpu_queue: str | None = None,
) -> PublishingService:
    """Put the worker's PublishingService into ``ctx`` and re-queue unfinished publications.

    ``gpu_queue``: the GPU workers' arq queue, where publications that need a GPU are handed."""
    queue = ArqQueue(settings.redis_url, gpu_queue=gpu_queue) if settings.redis_url else None
    service = PublishingService(settings, catalog.db, catalog.listings, sandbox, queue=queue)
    ctx[CTX_KEY] = service
    await service.recover()
    return service


async def stop_publishing(ctx: dict[str, Any]) -> None:
    service = ctx.pop(CTX_KEY, None)
    if service is not None and isinstance(service.queue, ArqQueue):
        await service.queue.close()
