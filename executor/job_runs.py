"""The run loop: a worker's ``run`` of one job, from its claim to its recorded outcome, under the job's
deadline and its heartbeat, dispatching to inference, training or a pipeline.

Separate because it is what decides a run's final status (and when a run stops writing: cancelled,
taken over, or the database gone); the work of each kind of job lives in its own module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

from catalog.actors import Actor
from catalog.enums import JobStatus, JobTask
from executor.allocation import Allocation
from executor.gpus import leased_gpus
from executor.job_base import JobServiceParts
from executor.job_claims import JobDeferred, claim_of
from executor.job_outcomes import JOB_DEADLINE_EXCEEDED, deadline_reason, failure_reason
from executor.job_queues import DEFERRED
from executor.runtimes import Limits
from infra.db import is_unreachable, retry_while_unreachable
from infra.errors import NotFound
from infra.fencing import Superseded, lost_claim
from infra.tables import Account, Job

logger = logging.getLogger("mlrepo.executor")

SUPERSEDED = "superseded"  # what ``run`` returns when the job was taken from it (``infra.fencing``)


class JobRuns(JobServiceParts):
    async def run(self, job_id: str) -> str:
        """The job function (arq's ``run_job`` or an in-process task); returns the final status, or
        ``DEFERRED`` when the job stays QUEUED for a later delivery (its account's limit of running jobs)."""
        try:
            row = await self.claim(job_id)
        except JobDeferred:
            return DEFERRED
        if row is None:
            return "skipped"
        claim = claim_of(row)
        target = f"pipeline {row.pipeline_id}" if row.pipeline_id else f"listing {row.listing_id}"
        logger.info("job %s claimed (attempt %d): %s of %s", job_id, claim.attempt, row.task, target)
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=self._staging_root()))
        work = asyncio.current_task()
        heartbeat = asyncio.create_task(self._heartbeat(claim, work))
        superseded: Superseded | None = None
        error_code: str | None = None
        # The whole run's wall clock: a model that answers each call and then hangs otherwise held this
        # worker for records x (timeout + 2 s), until its requester cancelled. Expiring, it stops the run
        # as a cancel does (the sandbox is killed, outputs written so far are dropped).
        deadline = asyncio.timeout(self.settings.job_max_duration_s)
        try:
            async with deadline:
                status, error = await self._run_job(row, staging)
        except (Superseded, asyncio.CancelledError) as stopped:
            # A write, or the heartbeat (which then cancels this task), found the job no longer this run's:
            # cancelled by its requester, or taken over (re-queued while this run could not beat).
            lost = lost_claim(stopped, claim)
            if lost is None:
                raise  # the worker is shutting down: the reconciler re-queues the job
            if lost.status != JobStatus.CANCELLED:
                superseded = lost
            status, error = JobStatus.CANCELLED, "cancelled by the requester"
        except Exception as exc:  # the job fails with its reason; the worker carries on
            if isinstance(exc, TimeoutError) and deadline.expired():
                status, error = JobStatus.TIMED_OUT, deadline_reason(self.settings.job_max_duration_s)
                error_code = JOB_DEADLINE_EXCEEDED
                logger.warning("job %s: %s", job_id, error)
            elif is_unreachable(exc):
                # Not the job's fault, and nothing can be written now: it stays RUNNING without heartbeats,
                # and the reconciler runs it again, as for a lost worker.
                logger.warning("job %s: the database stayed unreachable; left to the reconciler", job_id)
                raise
            else:
                logger.exception("job %s failed", job_id)
                status, error = JobStatus.FAILED, failure_reason(job_id, exc)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            shutil.rmtree(staging, ignore_errors=True)
            uses = self._uses.pop((job_id, claim.attempt), [])
            outputs = self._outputs.pop((job_id, claim.attempt), None)
        if error_code == JOB_DEADLINE_EXCEEDED:
            uses, outputs = [], None  # a stopped run's, as for a cancel: the requester gets none of them
        if superseded is not None:
            logger.warning("%s: it stopped and removed only its own files", superseded)
            return SUPERSEDED
        # The run is over (its outputs stored): a database restarting right now must not lose its outcome.
        recorded = await retry_while_unreachable(
            lambda: self._finish_run(job_id, status, error, uses, outputs, claim, error_code),
            self.settings.job_final_write_retry_s,
            f"job {job_id}: recording its outcome",
        )
        if not recorded and status != JobStatus.CANCELLED and not await self._final_under(claim, status):
            logger.warning(
                "%s no longer holds the job; its outcome (%s) was not recorded", claim, status.value
            )
            return SUPERSEDED
        reason = f": {error}" if error else ""
        logger.info("job %s %s in %.1f s%s", job_id, status.value, time.monotonic() - started, reason)
        return status.value

    async def _run_job(self, row: Job, staging: Path) -> tuple[JobStatus, str | None]:
        """The job's work, whatever its kind: its final status and reason."""
        unavailable = await self._listing_unavailable(row)
        if unavailable is not None:
            return JobStatus.FAILED, unavailable
        # The job's devices while it runs; a pipeline's row holds its most demanding step's.
        async with self.gpus.lease(int((row.resources or {}).get("gpu") or 0)):
            if row.pipeline_id is not None:
                return await self._run_pipeline(row, staging)
            if row.task == JobTask.TRAINING:
                from executor.training import run_training_job

                return await run_training_job(self, row, staging)
            return await self._run_inference(row, staging)

    async def _listing_unavailable(self, row: Job) -> str | None:
        """Why the job's listing (or the dataset it reads) may no longer be used by its owner,
        or None. Checked again when the job starts, because it may have waited in the queue while the
        listing was suspended (its behaviour changed) or made private. A pipeline job re-plans with its
        owner's visibility instead."""
        if row.pipeline_id is not None or row.listing_id is None:
            return None
        async with self.db.session() as session:
            account = await session.get(Account, row.owner_id)
        if account is None:
            return "the job's account no longer exists"
        owner = Actor(account_id=account.id, role=account.role, name=account.name)
        try:
            await self.catalog.listings.get(owner, row.listing_id)
        except NotFound:
            return "the listing is no longer available to you (suspended, made private or deleted)"
        dataset_id = (row.inputs or {}).get("dataset_listing_id")
        if dataset_id is not None:
            try:
                await self.catalog.listings.get(owner, dataset_id)
            except NotFound:
                what = "training data" if row.task == JobTask.TRAINING else "dataset to score"
                return f"the {what} is no longer available to you (suspended, made private or deleted)"
        return None

    async def _run_pipeline(self, row: Job, staging: Path) -> tuple[JobStatus, str | None]:
        if row.task == JobTask.TRAINING:
            from executor.pipeline_training import run_pipeline_training_row

            return await run_pipeline_training_row(self, row, staging)
        from executor.pipeline_jobs import run_pipeline_row

        return await run_pipeline_row(self, row, staging)

    def limits_for(self, allocation: Allocation, timeout_s: float | None) -> Limits:
        return Limits(
            timeout_s=timeout_s or self.settings.sandbox_default_timeout_s,
            memory_mb=allocation.memory_mb,
            cpus=allocation.cpu,
            pids=self.settings.sandbox_pids,
            max_output_bytes=self.settings.sandbox_max_output_bytes,
            tmpfs_mb=self.settings.sandbox_tmpfs_mb,
            gpus=leased_gpus()[: allocation.gpu],
        )
