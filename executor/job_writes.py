"""What a running job writes while it holds its claim: progress (also a heartbeat), results, metrics and
logs, and the outputs and usage it keeps until ``finish`` makes the job final.

Separate because every one of these writes is fenced by the run's claim (``Superseded`` once it no
longer holds the job), and the run loop, training and pipelines all write through them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from catalog.enums import JobStatus, UsageKind
from executor.batching import BatchProgress
from executor.inference import Tally
from executor.job_base import JobServiceParts
from executor.job_claims import claim_of
from executor.job_outputs import OutputsWriter
from infra.db import retry_while_unreachable
from infra.tables import Job, UsageEvent, utcnow
from infra.text import storable_text


class JobRunWrites(JobServiceParts):
    async def report_progress(self, row: Job, values: dict[str, Any]) -> None:
        """Store the progress of the run that claimed ``row`` (also a heartbeat) and tell watchers; raises
        ``Superseded`` when the job is no longer that run's (cancelled, or taken over), which stops the run
        at this point."""
        await claim_of(row).write_now(self.db, progress=values, heartbeat_at=utcnow())
        await self.events.publish(
            row.id, {"id": row.id, "status": JobStatus.RUNNING.value, "progress": values}
        )

    def progress_hook(
        self, row: Job, done_before: Tally | None = None, total: int | None = None
    ) -> Callable[[BatchProgress], Awaitable[None]]:
        """Reports a batch run's progress; for one chunk of a job, counted on from the chunks before it
        (``done_before``) out of the job's ``total``."""
        before = done_before or Tally()

        async def hook(progress: BatchProgress) -> None:
            values = {
                "batches_done": before.calls + progress.calls,
                "records_done": before.records + progress.done,
                "records_total": progress.total if total is None else total,
                "failed_calls": before.failed_calls + progress.failed_calls,
            }
            await self.report_progress(row, values)

        return hook

    async def store(self, row: Job, **values: Any) -> None:
        """Write fields of the job the run that claimed ``row`` holds (results, metrics, logs); raises
        ``Superseded`` when it no longer does (cancelled, or taken over): the job keeps none of them.
        Its sandbox has run: the write is retried while the database is unreachable, as ``run``'s last."""
        # A log is the sandbox's stderr: what it printed must not make the write fail (``storable_text``).
        values = {k: storable_text(v) if k in ("logs", "error") and v else v for k, v in values.items()}
        await retry_while_unreachable(
            lambda: claim_of(row).write_now(self.db, **values),
            self.settings.job_final_write_retry_s,
            f"job {row.id}: storing its result",
        )

    async def keep_written_outputs(self, row: Job, writer: OutputsWriter) -> None:
        """Store outputs a run wrote as it went (``OutputsWriter``); ``finish`` references them."""
        self._outputs[(row.id, row.attempts)] = await asyncio.to_thread(writer.store, self.artifacts)

    async def record_usage(
        self,
        row: Job,
        kind: UsageKind,
        status: JobStatus,
        latency_ms: float | None,
        listing_id: str | None = None,
    ) -> None:
        """Count the job's run for its listing (or ``listing_id``, e.g. a training's dataset) when ``run``
        makes the job final (``finish``), not before: a cancel may still come first."""
        listing_id = listing_id or row.listing_id
        if listing_id is None or status == JobStatus.CANCELLED:
            return
        success = status == JobStatus.SUCCEEDED
        use = UsageEvent(
            listing_id=listing_id,
            account_id=row.owner_id,
            kind=kind.value,
            success=success,
            latency_ms=latency_ms if success else None,
        )
        self._uses.setdefault((row.id, row.attempts), []).append(use)
