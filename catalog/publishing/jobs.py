"""arq job functions of publishing, for the worker's ``WorkerSettings`` (``executor/worker.py``).

The worker puts a ``PublishingService`` into its context at start-up (``ctx["publishing"]``, built with
the executor's sandbox), lists ``PUBLISHING_FUNCTIONS`` in ``functions`` and ``publishing_cron_jobs``
in ``cron_jobs``, and calls ``recover`` once so publications Redis lost are queued again.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from arq import cron
from arq.cron import CronJob

from infra.settings import Settings


async def publish_job(ctx: dict[str, Any], publication_id: str) -> str:
    """Run one publication to PUBLISHED or FAILED (the outcome is recorded on the publication)."""
    return await ctx["publishing"].run(publication_id)


async def reverify_job(ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """Re-run every verified listing's unit tests; listings whose behaviour changed are SUSPENDED."""
    results = await ctx["publishing"].verify_all()
    return [asdict(r) for r in results]


PUBLISHING_FUNCTIONS = (publish_job, reverify_job)


def publishing_cron_jobs(settings: Settings) -> list[CronJob]:
    """Re-verification on the hours implied by ``verify_interval_s`` (at least hourly, at most daily)."""
    hours_apart = min(max(settings.verify_interval_s // 3600, 1), 24)
    hours = set(range(0, 24, hours_apart)) if hours_apart < 24 else {3}
    return [cron(reverify_job, hour=hours, minute={17}, run_at_startup=False, unique=True)]
