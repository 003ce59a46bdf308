"""Inference through a sandbox: records → batched scoring calls → filtered outputs → a job verdict.

Each scoring call is a fresh sandbox copy fed one batch in the invocation contract. While a batch runs, the
copy for the next call is prepared (``Runtime.prepare``: a container created, started and waiting on
stdin), so a call's start overlaps the previous call instead of adding to it. The per-call deadline is
the producer's limit plus a fixed allowance, which is ours to pay, not the producer's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from catalog.enums import JobStatus
from executor.batching import (
    BatchCarry,
    BatchOutcome,
    BatchPolicy,
    CallResult,
    ProgressHook,
    run_in_batches,
)
from executor.contract import RecordOutcome, encode_records, parse_outputs
from executor.output_filter import OutputFilter
from executor.runtimes.base import Failure, Limits, Package, PreparedRun, RunRequest, Runtime

SANDBOX_START_ALLOWANCE_S = 2.0


@dataclass(frozen=True)
class InferencePlan:
    package: Package
    limits: Limits  # timeout_s here is the producer's per-call limit
    output_filter: OutputFilter
    max_batch: int = 10_000
    labels: tuple[tuple[str, str], ...] = ()
    executed_notebooks: bool = False  # a notebook's runner: keep each record's executed notebook

    def policy(self) -> BatchPolicy:
        return BatchPolicy(timeout_s=self.limits.timeout_s, max_batch=self.max_batch)

    def call_limits(self) -> Limits:
        return replace(self.limits, start_allowance_s=SANDBOX_START_ALLOWANCE_S)


class NextSandbox:
    """At most one copy prepared ahead: ``take`` hands it out (or prepares one on the spot) and, when more
    calls are to come, starts preparing the one after."""

    def __init__(self, runtime: Runtime, package: Package, request: RunRequest, limits: Limits) -> None:
        self._prepare = lambda: runtime.prepare(package, request, limits)
        self._ready: PreparedRun | None = None

    def take(self, more_to_come: bool) -> PreparedRun:
        sandbox, self._ready = self._ready or self._prepare(), None
        if more_to_come:
            self._ready = self._prepare()
        return sandbox

    async def discard(self) -> None:
        """Remove a copy prepared but never needed (the last batch answered, or the job ended early)."""
        ready, self._ready = self._ready, None
        if ready is not None:
            await ready.discard()


async def run_inference(
    runtime: Runtime,
    plan: InferencePlan,
    inputs: Sequence[Any],
    on_progress: ProgressHook | None = None,
    carry: BatchCarry | None = None,
) -> BatchOutcome:
    limits = plan.call_limits()
    sandboxes = NextSandbox(
        runtime, plan.package, RunRequest(command=plan.package.entrypoint, labels=dict(plan.labels)), limits
    )
    sent: set[int] = set()

    async def score(batch: Sequence[int]) -> CallResult:
        sent.update(batch)  # a retried piece is sent again; records never sent mean more calls to come
        sandbox = sandboxes.take(more_to_come=len(sent) < len(inputs))
        result = await sandbox.feed(encode_records((i, inputs[i]) for i in batch))
        parsed = parse_outputs(result.stdout, batch, keep_notebooks=plan.executed_notebooks)
        outcomes = {i: plan.output_filter.apply(o) for i, o in parsed.outcomes.items()}
        return CallResult(outcomes, result.duration_s, result.failure, parsed.ignored_lines)

    try:
        return await run_in_batches(len(inputs), score, plan.policy(), on_progress, carry)
    finally:
        await sandboxes.discard()


def verdict(outcome: BatchOutcome) -> tuple[JobStatus, str | None]:
    """A job succeeds when any record did; when none did, it fails with the first record's reason."""
    return Tally().add(outcome).verdict()


@dataclass
class Tally:
    """A job's outcome summed over the chunks it was scored in, without keeping the records: counts,
    the calls' latencies, the first error and whether every record timed out."""

    records: int = 0
    succeeded: int = 0
    calls: int = 0
    failed_calls: int = 0
    all_timed_out: bool = True
    first_error: str | None = None
    last_failure: Failure | None = None
    call_latencies_s: list[float] = field(default_factory=list)

    def add(self, outcome: BatchOutcome) -> Tally:
        self.records += len(outcome.results)
        self.succeeded += outcome.succeeded
        self.calls += outcome.progress.calls
        self.failed_calls += outcome.progress.failed_calls
        self.call_latencies_s += outcome.progress.call_latencies_s
        self.all_timed_out = self.all_timed_out and all(r.timed_out for r in outcome.results)
        if self.first_error is None:
            self.first_error = next((r.error for r in outcome.results if r.error), None)
        self.last_failure = outcome.last_failure or self.last_failure
        return self

    @property
    def failed(self) -> int:
        return self.records - self.succeeded

    def verdict(self) -> tuple[JobStatus, str | None]:
        if not self.records or self.succeeded:
            return JobStatus.SUCCEEDED, None
        if self.all_timed_out:
            return JobStatus.TIMED_OUT, self.first_error
        return JobStatus.FAILED, self.first_error

    def summary(self) -> dict[str, Any]:
        """What is stored on the job row: counts only, whatever the number of records."""
        return {"succeeded": self.succeeded, "failed": self.failed}


def output_records(outcome: BatchOutcome) -> Iterator[dict[str, Any]]:
    """The job's outputs (shown to its owner): one ``{output}`` or ``{error}`` per record, in input order
    (with its executed notebook for a notebook listing)."""
    return (record_line(r) for r in outcome.results)


def record_line(result: RecordOutcome) -> dict[str, Any]:
    """One record's output or error, and for a notebook listing its executed notebook."""
    record: dict[str, Any] = {"output": result.output} if result.ok else {"error": result.error}
    if result.notebook is not None:
        record["notebook"] = result.notebook
    return record
