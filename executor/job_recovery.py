"""Recovery: re-queue what the database says should run, give up on jobs lost too often, and remove
the containers a dead worker left behind.

Separate because it runs apart from any run (the reconciler: when a worker starts and every minute
after, or on a schedule in an API process without Redis): workers die and Redis forgets, and the rows
alone say what to do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import and_, or_, select, update

from catalog.enums import JobStatus
from executor.job_base import JOB_LABEL, JobServiceParts
from executor.job_views import JobView
from infra.heartbeat import lost_before, silent_since
from infra.tables import Job, utcnow

logger = logging.getLogger("mlrepo.executor")

MAX_LOG_CHARS = 20_000


class JobRecovery(JobServiceParts):
    async def reconcile(self) -> dict[str, int]:
        """Re-queue what the database says should run; fail what has been lost too often."""
        now = utcnow()
        stale_before = lost_before(self.settings.job_stale_after_s)
        silent = silent_since(stale_before, Job.heartbeat_at, Job.started_at, Job.created_at)
        requeue: list[tuple[str, str, int]] = []
        lost: list[str] = []
        failed = 0
        async with self.db.session() as session:
            rows = (
                await session.scalars(
                    select(Job).where(
                        or_(
                            Job.status == JobStatus.QUEUED.value,
                            and_(Job.status == JobStatus.RUNNING.value, silent),
                        )
                    )
                )
            ).all()
            for row in rows:
                if row.status == JobStatus.QUEUED:
                    requeue.append((row.id, row.resource_class, (row.attempts or 0) + 1))
                    continue
                gave_up = (row.attempts or 0) >= self.settings.job_max_attempts
                values: dict[str, Any] = (
                    {
                        "status": JobStatus.FAILED.value,
                        "error": f"the worker running this job was lost {row.attempts} times; giving up",
                        "finished_at": now,
                    }
                    if gave_up
                    else {
                        "status": JobStatus.QUEUED.value,
                        "logs": _append_log(
                            row.logs, f"worker lost during attempt {row.attempts}; re-queued"
                        ),
                    }
                )
                # Only if nothing moved since the read: its worker may have finished it (or beaten) since.
                result = await session.execute(
                    update(Job)
                    .where(Job.id == row.id, Job.status == JobStatus.RUNNING.value, silent)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 0:
                    continue
                lost.append(row.id)
                if gave_up:
                    failed += 1
                else:
                    requeue.append((row.id, row.resource_class, (row.attempts or 0) + 1))
        for job_id in lost:
            await asyncio.to_thread(self._remove_orphans, job_id)
            await self._publish_status(job_id)
        for job_id, resource_class, attempt in requeue:
            await self.deliver(job_id, resource_class, attempt)
        return {"requeued": len(requeue), "failed": failed}

    def _remove_orphans(self, job_id: str) -> None:
        """A dead worker's container would run on unwatched (bwrap sandboxes die with their worker)."""
        if self.selector.mode != "bwrap" and self.selector.docker.available():
            removed = self.selector.docker.remove_containers(JOB_LABEL, job_id)
            if removed:
                logger.warning("removed %d orphaned container(s) of job %s", removed, job_id)

    async def _publish_status(self, job_id: str) -> None:
        """Tell watchers about a change made without a view in hand (the reconciler's)."""
        async with self.db.session() as session:
            row = await session.get(Job, job_id)
            view = JobView.of(row) if row is not None else None
        if view is not None:
            await self._publish(view)


def _append_log(logs: str | None, line: str) -> str:
    return ((logs or "") + ("\n" if logs else "") + line)[-MAX_LOG_CHARS:]
