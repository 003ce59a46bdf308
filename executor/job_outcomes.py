"""How a job becomes final: ``finish`` moves it to its final status in one transaction that also counts
its runs for listings and references its outputs, retried so that an ended run's outcome is not lost;
and the reasons a requester reads when a job fails or runs past its deadline.

Separate because the final write is shared by the run loop, the requester's cancel and pipelines, and
its retries and idempotence are a subject of their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, select, update

from catalog.enums import JobStatus
from executor.job_base import JobServiceParts
from executor.job_outputs import StoredOutputs
from executor.job_views import JobView
from infra.db import is_unreachable
from infra.errors import MlrepoError
from infra.fencing import Claim
from infra.tables import Job, UsageEvent, utcnow
from infra.text import storable_text

logger = logging.getLogger("mlrepo.executor")

# What the requester reads when a job fails on an error that was not written for them (see failure_reason).
INTERNAL_FAILURE = "internal error while running the job; the operator's log has it under job {job_id}"
# How long a run that ended waits before it tries again to write its final status (then it gives up).
FINISH_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
# ``Job.error_code`` of a job stopped at ``job_max_duration_s`` (status TIMED_OUT): a client tells it from a
# job whose every call timed out (TIMED_OUT, no code) without parsing the reason.
JOB_DEADLINE_EXCEEDED = "JOB_DEADLINE_EXCEEDED"


class JobOutcomes(JobServiceParts):
    async def _finish_run(
        self,
        job_id: str,
        status: JobStatus,
        error: str | None,
        uses: list[UsageEvent],
        outputs: StoredOutputs | None,
        claim: Claim,
        error_code: str | None = None,
    ) -> bool:
        """``finish`` for the run that just ended, tried again on a database error other than the
        database being unreachable (which the caller waits out with ``retry_while_unreachable``). Its
        heartbeat has stopped: a finish lost to one error (a deadlock, SQLite locked past its busy
        timeout) left the job RUNNING with nobody beating for it, until the reconciler ran it again a
        minute later. ``finish`` is one transaction that changes nothing unless the run still holds the
        job, so a retry is safe."""
        for delay in (*FINISH_RETRY_DELAYS_S, None):
            try:
                return await self.finish(
                    job_id, status, error, uses, outputs, claim=claim, error_code=error_code
                )
            except Exception as exc:
                if delay is None or is_unreachable(exc):
                    raise  # still RUNNING: the reconciler re-queues it once its heartbeat is stale
                logger.warning("job %s: not finished; retrying in %g s", job_id, delay, exc_info=True)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        error: str | None = None,
        uses: Sequence[UsageEvent] = (),
        outputs: StoredOutputs | None = None,
        claim: Claim | None = None,
        error_code: str | None = None,
    ) -> bool:
        """Move a job that is not final yet to ``status``; False when it already was final, or, for the
        run that holds ``claim``, when the job is no longer that run's (``infra.fencing``).

        Its ``uses`` (runs to count for listings) are counted, and its ``outputs`` referenced, in the same
        transaction, and only when this call made the job final: a cancel that landed after the last
        batch won, and the requester gets no result of that run."""
        # The reason may quote the program (its stderr, its answer): storable on both databases.
        reason = storable_text(error) if error else error
        values: dict[str, Any] = {
            "status": status.value,
            "error": reason,
            "error_code": error_code,
            "finished_at": utcnow(),
        }
        if outputs is not None and status != JobStatus.CANCELLED:
            values.update(outputs_digest=outputs.digest, outputs_count=outputs.count)
        async with self.catalog.index.atomic() as (session, changes):
            unfinished = Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value])
            held = claim.holds() if claim is not None else and_(Job.id == job_id, unfinished)
            result = await session.execute(update(Job).where(held).values(**values))
            changed = result.rowcount > 0
            row = await session.get(Job, job_id) if changed else None
            for use in uses if row is not None else ():
                counted = await self.catalog.usage.record_in(session, changes, use)
                if counted is None:
                    logger.info("listing %s vanished before its usage was recorded", use.listing_id)
        if row is not None:
            await self._publish(JobView.of(row))
        return changed

    async def _final_under(self, claim: Claim, status: JobStatus) -> bool:
        """Whether the job is final with ``status`` under ``claim``: so a retried final write finds it when
        its first try landed though the acknowledgement was lost."""
        async with self.db.session() as session:
            now = (
                await session.execute(select(Job.status, Job.attempts).where(Job.id == claim.row_id))
            ).first()
        return now is not None and tuple(now) == (status.value, claim.attempt)


def deadline_reason(limit_s: float) -> str:
    return (
        f"the job ran past its deadline of {limit_s:g} s (MLREPO_JOB_MAX_DURATION_S) and was stopped; "
        "outputs of the stopped run are not kept"
    )


def failure_reason(job_id: str, exc: Exception) -> str:
    """The ``error`` a job's owner reads. Our errors are written for them; any other exception's text
    is the server's own (host paths, engine and database addresses), kept in the operator's log. Ours end
    with the code the API would answer (``[BAD_INPUT]``), as the command line writes them."""
    if isinstance(exc, MlrepoError):
        return f"{exc.message} [{exc.code}]"
    return INTERNAL_FAILURE.format(job_id=job_id)
