"""Cancelling a job, and how its running worker learns it no longer holds the job (cancelled by its
requester, or taken over by another run) and stops the sandbox.

Separate because cancellation crosses processes: the requester's ``cancel`` only marks the row; the
worker's heartbeat (woken by the job's events, or by its next beat) notices and cancels the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from catalog.actors import Actor
from catalog.enums import JobStatus
from executor.job_base import JobServiceParts
from executor.job_views import JobView
from infra.errors import Conflict, Unauthenticated
from infra.fencing import Claim, beat_under
from infra.heartbeat import keep_beating

logger = logging.getLogger("mlrepo.executor")


class JobCancellation(JobServiceParts):
    async def cancel(self, actor: Actor, job_id: str) -> JobView:
        if actor.account_id is None:  # an anonymous write (README: UNAUTHENTICATED), not an unknown job
            raise Unauthenticated("sign in to cancel jobs")
        await self.get(actor, job_id)
        if not await self.finish(job_id, JobStatus.CANCELLED, error="cancelled by the requester"):
            view = await self.get(actor, job_id)
            if view.status != JobStatus.CANCELLED:
                # CONFLICT, not BAD_INPUT: the request was well formed; the job's state no longer allows it.
                raise Conflict(f"job {job_id} already finished ({view.status})", field="id")
        return await self.get(actor, job_id)

    async def _heartbeat(self, claim: Claim, work: asyncio.Task[Any] | None) -> None:
        """Beat while ``claim`` holds the job; once it does not (cancelled, or taken over), cancel ``work``,
        which stops the sandbox: the bwrap session or the container is killed."""
        cancelled = asyncio.Event()
        listening = asyncio.create_task(self._hear_cancel(claim.row_id, cancelled))
        try:
            beat = beat_under(self.db, claim, work)
            await keep_beating(beat, self.settings.job_heartbeat_s, str(claim), wake=cancelled)
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening

    async def _hear_cancel(self, job_id: str, cancelled: asyncio.Event) -> None:
        """Wake the heartbeat when the job's events say it was cancelled (a cancel through any API process
        publishes one), so its sandbox stops at once, not up to ``job_heartbeat_s`` later. Best effort:
        without events the next beat still finds the cancel in the database."""
        try:
            async with self.events.subscribe(job_id) as stream:
                async for event in stream:
                    if event.get("status") == JobStatus.CANCELLED:
                        cancelled.set()
        except Exception:
            logger.info("job %s: no cancel events; the heartbeat alone will notice", job_id, exc_info=True)
