"""Timeouts and batch splitting: fit every scoring call inside the producer's time limit.

Why batches at all: starting a sandbox costs tens to hundreds of milliseconds, so sending one record per
call wastes most of the time; sending everything at once breaks the producer's per-call limit. So the
first call is a small probe, later batches are sized from the measured per-record time (aiming at a
fraction of the limit, growing at most ``growth``-fold per step so one lucky measurement cannot overshoot),
and a call that still fails is retried on what it left unanswered, halved, down to single records, which
then fail with their reason. Results come back in input order with per-record errors.

A model that answers nothing at all is given up on after ``max_failed_calls`` failed calls *in a row*
without a single answer; isolating one bad record takes about log2(batch) + 1 such calls, so the budget
counts from the last answered record, not from the start of the job (a few bad records among many
would otherwise leave the good records after them unrun).

This module is pure scheduling: the scoring call is injected, so the same logic drives sandboxes in jobs
and plain coroutines in tests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from executor.contract import RecordOutcome
from executor.runtimes.base import Failure, FailureKind


@dataclass(frozen=True)
class CallResult:
    """Outcome of one scoring call over a batch of record indexes."""

    outcomes: dict[int, RecordOutcome]
    duration_s: float
    failure: Failure | None = None
    ignored_lines: int = 0  # lines of output that answered nothing asked (``contract.parse_outputs``)


ScoringCall = Callable[[Sequence[int]], Awaitable[CallResult]]
ProgressHook = Callable[["BatchProgress"], Awaitable[None]]


@dataclass(frozen=True)
class BatchPolicy:
    timeout_s: float
    target_fraction: float = 0.5
    first_batch: int = 32
    max_batch: int = 10_000
    growth: int = 32
    max_failed_calls: int = 16

    def next_size(self, per_record_s: float | None, previous: int) -> int:
        if per_record_s is None or per_record_s <= 0:
            return self.first_batch
        fits = int(self.timeout_s * self.target_fraction / per_record_s)
        return max(1, min(self.max_batch, fits, max(1, previous) * self.growth))


@dataclass
class BatchProgress:
    total: int
    done: int = 0
    calls: int = 0
    failed_calls: int = 0
    failed_in_a_row: int = 0  # failed calls since the last call that answered a record
    call_latencies_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class BatchCarry:
    """What one run of ``run_in_batches`` learnt, handed to the next when a job scores its records a
    chunk at a time: the batch size reached and the per-record estimate (so each chunk does not start
    over with a probe), and the failed calls in a row (so a model that answers nothing is given up on
    once, not once per chunk)."""

    per_record_s: float | None = None
    size: int | None = None
    largest_ok: int = 0
    failed_in_a_row: int = 0
    last_failure: Failure | None = None


@dataclass
class BatchOutcome:
    results: list[RecordOutcome]
    progress: BatchProgress
    last_failure: Failure | None = None
    carry: BatchCarry = field(default_factory=BatchCarry)

    @property
    def succeeded(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def all_timed_out(self) -> bool:
        return bool(self.results) and all(r.timed_out for r in self.results)


async def run_in_batches(
    total: int,
    call: ScoringCall,
    policy: BatchPolicy,
    on_progress: ProgressHook | None = None,
    carry: BatchCarry | None = None,
) -> BatchOutcome:
    """Score records ``0..total-1`` through ``call``; see the module docstring for the strategy.
    ``carry`` continues where the previous chunk of the same job left off (``BatchOutcome.carry``)."""
    carry = carry or BatchCarry()
    results: list[RecordOutcome | None] = [None] * total
    progress = BatchProgress(total=total, failed_in_a_row=carry.failed_in_a_row)
    per_record: float | None = carry.per_record_s
    largest_ok = carry.largest_ok
    size = carry.size or policy.first_batch
    retry: deque[list[int]] = deque()  # unanswered pieces of failed calls, processed first
    cursor = 0
    last_failure: Failure | None = carry.last_failure

    while retry or cursor < total:
        if progress.failed_in_a_row >= policy.max_failed_calls:
            reason = (
                f"not run: {progress.failed_in_a_row} scoring calls failed in a row "
                f"(last: {_reason(last_failure)})"
            )
            # Given up on because calls kept timing out, they count as timed out (as a lone slow record).
            timed_out = last_failure is not None and last_failure.kind == FailureKind.TIMEOUT
            for index in [i for piece in retry for i in piece] + list(range(cursor, total)):
                results[index] = RecordOutcome(error=reason, timed_out=timed_out)
            progress.done = total
            break
        if retry:
            batch = retry.popleft()
        else:
            size = policy.next_size(per_record, size)
            batch = list(range(cursor, min(total, cursor + size)))
            cursor += len(batch)

        outcome = await call(batch)
        progress.calls += 1
        progress.call_latencies_s.append(outcome.duration_s)
        answered = [i for i in batch if i in outcome.outcomes]
        for index in answered:
            results[index] = outcome.outcomes[index]
        missing = [i for i in batch if i not in outcome.outcomes]
        if answered:
            progress.failed_in_a_row = 0

        if outcome.failure is None:
            if batch and len(batch) >= largest_ok:
                # The biggest batch so far gives the best estimate: its sandbox start is spread thinnest.
                per_record, largest_ok = outcome.duration_s / len(batch), len(batch)
            for index in missing:
                results[index] = RecordOutcome(error=_unanswered(outcome.ignored_lines))
        else:
            progress.failed_calls += 1
            progress.failed_in_a_row += 0 if answered else 1
            last_failure = outcome.failure
            if len(batch) > 1 and outcome.failure.kind == FailureKind.TIMEOUT:
                # The batch was too big for the limit: trust the measurement for the batches to come.
                per_record = max(per_record or 0.0, policy.timeout_s / len(batch))
            if len(batch) == 1 and missing:
                # Only a record that failed on its own is blamed; in a batch it may have been a bystander.
                results[missing[0]] = _failed_record(outcome.failure)
            elif len(missing) == 1:
                retry.appendleft(missing)
            elif missing:
                half = len(missing) // 2
                retry.appendleft(missing[half:])
                retry.appendleft(missing[:half])
        progress.done = sum(1 for r in results if r is not None)
        if on_progress is not None:
            await on_progress(progress)

    final = [r if r is not None else RecordOutcome(error="not run") for r in results]
    learnt = BatchCarry(per_record, size, largest_ok, progress.failed_in_a_row, last_failure)
    return BatchOutcome(final, progress, last_failure, learnt)


def _unanswered(ignored_lines: int) -> str:
    """Why a record of a call that ended well has no outcome: a program printing its answers in another
    shape (Python's repr, bytes that are not UTF-8) should hear that it printed something."""
    reason = "the entrypoint returned no output for this record"
    if ignored_lines:
        reason += (
            f" ({ignored_lines} line(s) it printed were not answers: each must be a UTF-8 JSON object "
            '{"id": …, "output": …} or {"id": …, "error": …} with an id it was given)'
        )
    return reason


def _failed_record(failure: Failure) -> RecordOutcome:
    return RecordOutcome(error=failure.reason, timed_out=failure.kind == FailureKind.TIMEOUT)


def _reason(failure: Failure | None) -> str:
    return failure.reason if failure else "unknown"
