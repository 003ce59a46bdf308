"""Running an inference job: prepare the listing's package, score the records a chunk at a time in the
sandbox, and store the tally, metrics and outputs.

Separate from the run loop (``executor.job_runs``) as training (``executor.training``) and pipelines
(``executor.pipeline_jobs``) are: the run loop claims, times and finishes a job; this does its work.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from catalog.enums import JobStatus, UsageKind
from executor.allocation import Allocation
from executor.datasets import job_input_chunks
from executor.gpus import leased_gpus
from executor.inference import InferencePlan, Tally, output_records, run_inference
from executor.job_base import JOB_LABEL, JobServiceParts
from executor.job_outputs import OutputsWriter
from executor.output_filter import OutputFilter
from executor.packages import prepare_runnable
from infra.tables import Job, Listing


class JobInference(JobServiceParts):
    async def _run_inference(self, row: Job, staging: Path) -> tuple[JobStatus, str | None]:
        async with self.db.session() as session:
            listing = await session.get(Listing, row.listing_id)
            version = await self.latest_version(session, row.listing_id)
        if listing is None or version is None:
            return JobStatus.FAILED, "the listing or its published version no longer exists"
        runnable = await prepare_runnable(self.settings, self.selector, version, staging)
        allocation = Allocation(**row.resources)
        plan = InferencePlan(
            package=runnable.package,
            limits=self.limits_for(allocation, listing.timeout_s),
            output_filter=OutputFilter.for_listing(listing.output_format, listing.output_schema),
            max_batch=self.settings.job_max_batch_records,
            labels=((JOB_LABEL, row.id),),
            executed_notebooks=runnable.notebook,
        )
        started = time.perf_counter()
        tally = await self._score_in_chunks(row, runnable.runtime, plan, staging)
        elapsed = time.perf_counter() - started
        status, error = tally.verdict()
        latencies = tally.call_latencies_s
        metrics = {
            "runtime": runnable.runtime.name,
            "gpus": list(leased_gpus()),
            "version": runnable.version,
            "records": tally.records,
            "succeeded": tally.succeeded,
            "calls": tally.calls,
            "failed_calls": tally.failed_calls,
            "duration_s": round(elapsed, 4),
            "per_record_ms": round(1000 * elapsed / max(1, tally.records), 4),
            "call_p50_ms": round(1000 * statistics.median(latencies), 2) if latencies else None,
        }
        logs = "\n".join(f"call {i + 1}: {1000 * s:.0f} ms" for i, s in enumerate(latencies[:200])) + (
            f"\nlast failure: {tally.last_failure.reason}" if tally.last_failure else ""
        )
        await self.store(row, result=tally.summary(), metrics=metrics, logs=logs)
        await self.record_usage(row, UsageKind.INFERENCE, status, metrics["per_record_ms"])
        return status, error

    async def _score_in_chunks(self, row: Job, runtime: Any, plan: InferencePlan, staging: Path) -> Tally:
        """Score the job's records (its dataset's, streamed from the stored file, then those given inline)
        a chunk of ``job_max_batch_records`` at a time, writing each chunk's outputs out before reading
        the next: memory stays bounded whatever the dataset's size. What batching learnt (batch size,
        failures in a row) carries from one chunk to the next, so chunks do not each start over."""
        total, chunks = await job_input_chunks(self.settings, row.inputs or {}, staging / "dataset")
        writer = OutputsWriter(staging / "outputs")
        tally, carry = Tally(), None
        try:
            async for chunk in chunks:
                hook = self.progress_hook(row, done_before=tally, total=total)
                outcome = await run_inference(runtime, plan, chunk, hook, carry)
                carry = outcome.carry
                tally.add(outcome)
                await asyncio.to_thread(writer.extend, output_records(outcome))
            await self.keep_written_outputs(row, writer)
        except BaseException:
            writer.discard()
            raise
        return tally
