"""Inference through a sandbox: records → batched scoring calls → filtered outputs → a job verdict.

Each scoring call is a fresh sandbox copy (``Runtime.run``) fed one batch in the invocation contract; the
per-call deadline is the producer's limit plus a fixed allowance for starting the sandbox, which is ours
to pay, not the producer's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from catalog.enums import JobStatus
from executor.batching import BatchOutcome, BatchPolicy, CallResult, ProgressHook, run_in_batches
from executor.contract import encode_records, parse_outputs
from executor.output_filter import OutputFilter
from executor.runtimes.base import Limits, Package, RunRequest, Runtime

SANDBOX_START_ALLOWANCE_S = 2.0


@dataclass(frozen=True)
class InferencePlan:
    package: Package
    limits: Limits  # timeout_s here is the producer's per-call limit
    output_filter: OutputFilter
    max_batch: int = 10_000
    labels: tuple[tuple[str, str], ...] = ()

    def policy(self) -> BatchPolicy:
        return BatchPolicy(timeout_s=self.limits.timeout_s, max_batch=self.max_batch)

    def call_limits(self) -> Limits:
        return replace(self.limits, timeout_s=self.limits.timeout_s + SANDBOX_START_ALLOWANCE_S)


async def run_inference(
    runtime: Runtime, plan: InferencePlan, inputs: Sequence[Any], on_progress: ProgressHook | None = None
) -> BatchOutcome:
    limits = plan.call_limits()

    async def score(batch: Sequence[int]) -> CallResult:
        request = RunRequest(
            command=plan.package.entrypoint,
            stdin=encode_records((i, inputs[i]) for i in batch),
            labels=dict(plan.labels),
        )
        result = await runtime.run(plan.package, request, limits)
        parsed = parse_outputs(result.stdout, batch)
        outcomes = {i: plan.output_filter.apply(o) for i, o in parsed.outcomes.items()}
        return CallResult(outcomes, result.duration_s, result.failure)

    return await run_in_batches(len(inputs), score, plan.policy(), on_progress)


def verdict(outcome: BatchOutcome) -> tuple[JobStatus, str | None]:
    """A job succeeds when any record did; when none did, it fails with the first record's reason."""
    if not outcome.results:
        return JobStatus.SUCCEEDED, None
    if outcome.succeeded:
        return JobStatus.SUCCEEDED, None
    first = next(r.error for r in outcome.results if r.error)
    if outcome.all_timed_out:
        return JobStatus.TIMED_OUT, first
    return JobStatus.FAILED, first


def result_payload(outcome: BatchOutcome) -> dict[str, Any]:
    """What is stored on the job row (visible to its owner): outputs in input order, per-record errors."""
    return {
        "records": [{"output": r.output} if r.ok else {"error": r.error} for r in outcome.results],
        "succeeded": outcome.succeeded,
        "failed": len(outcome.results) - outcome.succeeded,
    }
