"""Heartbeats of long work whose row is the truth: a job or a publication, RUNNING on some worker.

A worker that dies says nothing, so the row itself must show that its worker is alive: the worker
refreshes the row's ``heartbeat_at`` every ``job_heartbeat_s`` while the work runs (``keep_beating``),
and recovery takes a RUNNING row whose last beat is older than ``job_stale_after_s`` as lost
(``lost_before``, ``silent_since``), moving it on only if no beat landed since it looked: its worker may
have been slow, not dead. Jobs (``executor.jobs``) and publications (``catalog.publishing``) share
this; what each does with a lost row (re-queue, or fail after too many runs) is their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func

from infra.tables import utcnow

logger = logging.getLogger("mlrepo.heartbeat")

Beat = Callable[[], Awaitable[bool]]


async def keep_beating(beat: Beat, interval_s: float, what: str, wake: asyncio.Event | None = None) -> None:
    """Call ``beat`` every ``interval_s`` (or as soon as ``wake`` is set) until it returns False.

    A beat that fails (the database is away for a moment) is logged and tried again at the next
    interval: ending the heartbeats would make live work look lost to recovery, which runs it again."""
    while True:
        if wake is None:
            await asyncio.sleep(interval_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=interval_s)
            wake.clear()
        try:
            if not await beat():
                return
        except Exception:
            logger.warning("%s: heartbeat failed; retrying", what, exc_info=True)


@contextlib.asynccontextmanager
async def beating(beat: Beat, interval_s: float, what: str) -> AsyncIterator[None]:
    """``keep_beating`` while the block runs; the heartbeats stop when it ends, however it ends."""
    task = asyncio.create_task(keep_beating(beat, interval_s, what), name=f"heartbeat:{what}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def lost_before(stale_after_s: float) -> datetime:
    """Work whose last heartbeat is older than this lost its worker."""
    return utcnow() - timedelta(seconds=stale_after_s)


def silent_since(cutoff: datetime, heartbeat: Any, *earlier: Any) -> ColumnElement[bool]:
    """Whether a row's last sign of life — its ``heartbeat`` column, else the first of ``earlier`` that is
    set (when it started, was created) — is older than ``cutoff``. Recovery selects lost rows with it and
    puts it in its UPDATE's condition too, so that a row whose worker beat since the read is left alone:
    that worker was slow, not dead."""
    return func.coalesce(heartbeat, *earlier) < cutoff
