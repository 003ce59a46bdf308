"""When the artifact garbage collection runs by itself (``gc_interval_hours``), and the loop that runs it
in an API process without Redis.

A collection is also what applies the retention of job outputs (``job_output_retention_days``), so a
deployment that never collects keeps every output forever whatever the retention says. It runs at minute
``GC_MINUTE`` of every ``gc_interval_hours``-th hour of the day (local time, as arq's cron): once a day,
at 00:43, by default. With Redis the cpu workers run it (arq cron, one worker per run); without Redis
there is no worker, and the API process runs it on the same schedule (``collect_garbage_on_schedule``).
The schedule is by the clock, not "every N hours since start", so a process restarted more often than
the interval still collects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from catalog.artifact_gc import collect_garbage
from infra.db import Database
from infra.settings import Settings

logger = logging.getLogger(__name__)

GC_MINUTE = 43  # off the hour, when other periodic work tends to start


def gc_hours(settings: Settings) -> set[int]:
    """The hours of the day a collection starts in; empty when it never runs by itself (0 hours)."""
    if settings.gc_interval_hours <= 0:
        return set()
    return set(range(0, 24, settings.gc_interval_hours))


def next_collection(now: datetime, hours: set[int]) -> datetime:
    """The first scheduled start strictly after ``now`` (``hours`` not empty)."""
    start = now.replace(minute=GC_MINUTE, second=0, microsecond=0)
    if start <= now:
        start += timedelta(hours=1)
    while start.hour not in hours:
        start += timedelta(hours=1)
    return start


def local_now() -> datetime:
    return datetime.now().astimezone()


async def collect_garbage_on_schedule(
    settings: Settings, db: Database, clock: Callable[[], datetime] = local_now
) -> None:
    """``mlrepo gc --delete`` at every scheduled start until cancelled (returns at once when unscheduled);
    a failed collection is logged and the next one runs at its time."""
    hours = gc_hours(settings)
    if not hours:
        return
    while True:
        now = clock()
        await asyncio.sleep((next_collection(now, hours) - now).total_seconds())
        try:
            await collect_garbage(settings, db, delete=True)
        except Exception:
            logger.exception("scheduled artifact garbage collection failed; the next one runs on schedule")
