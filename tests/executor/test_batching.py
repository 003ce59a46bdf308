"""Batch splitting as pure scheduling logic: scoring calls are simulated with a cost model (startup
overhead + per-record seconds), so sizes, halving and ordering can be checked exactly and instantly.
The same logic runs against the real sandboxes in test_inference.py."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from catalog.enums import JobStatus
from executor.batching import BatchPolicy, BatchProgress, CallResult, run_in_batches
from executor.contract import RecordOutcome
from executor.inference import verdict
from executor.runtimes.base import Failure, FailureKind


class SimulatedModel:
    """Answers ``index * 10``; a call whose simulated time exceeds the limit times out unanswered."""

    def __init__(self, timeout_s: float, per_record_s: float = 0.001, overhead_s: float = 0.05) -> None:
        self.timeout_s = timeout_s
        self.per_record_s = per_record_s
        self.overhead_s = overhead_s
        self.slow: dict[int, float] = {}
        self.crash_on: set[int] = set()
        self.calls: list[list[int]] = []

    async def __call__(self, batch: Sequence[int]) -> CallResult:
        self.calls.append(list(batch))
        duration = self.overhead_s + sum(self.slow.get(i, self.per_record_s) for i in batch)
        if duration > self.timeout_s:
            return CallResult(
                {}, self.timeout_s, Failure(FailureKind.TIMEOUT, f"timed out after {self.timeout_s} s")
            )
        if self.crash_on & set(batch):
            return CallResult({}, duration, Failure(FailureKind.CRASHED, "exited with status 1: ValueError"))
        return CallResult({i: RecordOutcome(output=i * 10) for i in batch}, duration)


async def test_results_come_back_in_input_order_with_growing_batches() -> None:
    model = SimulatedModel(timeout_s=1.0)
    outcome = await run_in_batches(10_000, model, BatchPolicy(timeout_s=1.0, first_batch=16, max_batch=5000))
    assert [r.output for r in outcome.results] == [i * 10 for i in range(10_000)]
    sizes = [len(c) for c in model.calls]
    assert sizes[0] == 16
    assert sizes == sorted(sizes[:-1]) + sizes[-1:]  # grows, the last one takes what is left
    assert max(sizes) * model.per_record_s + model.overhead_s <= 1.0  # every call fits the limit
    assert len(model.calls) < 40


def test_next_size_aims_at_a_fraction_of_the_limit_and_grows_at_most_by_growth() -> None:
    policy = BatchPolicy(timeout_s=10.0, target_fraction=0.5, first_batch=4, max_batch=1000, growth=8)
    assert policy.next_size(None, 0) == 4
    assert policy.next_size(0.001, 4) == 32  # fits 5000, capped by growth
    assert policy.next_size(0.001, 500) == 1000  # capped by max_batch
    assert policy.next_size(0.5, 100) == 10  # fits 10
    assert policy.next_size(100.0, 100) == 1  # never zero


async def test_a_batch_that_times_out_is_halved_until_the_slow_record_fails_alone() -> None:
    model = SimulatedModel(timeout_s=1.0, per_record_s=0.001)
    model.slow[37] = 5.0
    outcome = await run_in_batches(100, model, BatchPolicy(timeout_s=1.0, first_batch=64))
    errors = {i: r.error for i, r in enumerate(outcome.results) if not r.ok}
    assert list(errors) == [37]
    assert "timed out" in errors[37]
    assert outcome.results[37].timed_out
    assert [r.output for i, r in enumerate(outcome.results) if i != 37] == [
        i * 10 for i in range(100) if i != 37
    ]
    assert [37] in model.calls  # it failed on its own, not as a bystander
    assert outcome.progress.failed_calls == 7  # 64 → 32 → 16 → 8 → 4 → 2 → 1


async def test_a_crashing_record_is_isolated_and_its_neighbours_succeed() -> None:
    model = SimulatedModel(timeout_s=10.0)
    model.crash_on = {3}
    outcome = await run_in_batches(8, model, BatchPolicy(timeout_s=10.0, first_batch=8))
    assert [r.ok for r in outcome.results] == [True, True, True, False, True, True, True, True]
    assert outcome.results[3].error == "exited with status 1: ValueError"
    assert not outcome.results[3].timed_out


async def test_partial_answers_of_a_failed_call_are_kept_and_only_the_rest_is_retried() -> None:
    calls: list[list[int]] = []

    async def call(batch: Sequence[int]) -> CallResult:
        calls.append(list(batch))
        if len(batch) > 1:  # answers the first record, then dies
            return CallResult(
                {batch[0]: RecordOutcome(output="x")}, 0.1, Failure(FailureKind.CRASHED, "boom")
            )
        return CallResult({batch[0]: RecordOutcome(output="y")}, 0.1)

    outcome = await run_in_batches(4, call, BatchPolicy(timeout_s=10.0, first_batch=4))
    assert calls[0] == [0, 1, 2, 3]
    assert calls[1] == [1]  # the unanswered [1, 2, 3] was halved: [1] then [2, 3]
    assert [r.output for r in outcome.results] == ["x", "y", "x", "y"]


async def test_missing_answers_in_a_successful_call_are_per_record_errors() -> None:
    async def call(batch: Sequence[int]) -> CallResult:
        return CallResult({i: RecordOutcome(output=i) for i in batch if i % 2 == 0}, 0.01)

    outcome = await run_in_batches(4, call, BatchPolicy(timeout_s=1.0))
    assert [r.ok for r in outcome.results] == [True, False, True, False]
    assert "no output" in (outcome.results[1].error or "")


async def test_a_model_that_always_fails_stops_after_the_failed_call_budget() -> None:
    model = SimulatedModel(timeout_s=10.0)
    model.crash_on = set(range(1000))
    outcome = await run_in_batches(
        1000, model, BatchPolicy(timeout_s=10.0, first_batch=1000, max_failed_calls=5)
    )
    assert len(model.calls) == 5
    assert all(not r.ok for r in outcome.results)
    assert all("not run: 5 scoring calls failed" in (r.error or "") for r in outcome.results)
    assert outcome.progress.done == 1000


async def test_progress_is_reported_after_every_call_and_may_stop_the_run() -> None:
    seen: list[int] = []

    class Stop(Exception):
        pass

    async def hook(progress: BatchProgress) -> None:
        seen.append(progress.done)
        if progress.calls == 2:
            raise Stop

    model = SimulatedModel(timeout_s=1.0)
    with pytest.raises(Stop):
        await run_in_batches(1000, model, BatchPolicy(timeout_s=1.0, first_batch=10), hook)
    assert seen == [10, 93]  # 10, then as many as fit half the limit at the measured 6 ms per record


async def test_no_records_means_no_calls() -> None:
    model = SimulatedModel(timeout_s=1.0)
    outcome = await run_in_batches(0, model, BatchPolicy(timeout_s=1.0))
    assert outcome.results == [] and model.calls == []


async def test_a_few_crashing_records_among_many_cost_only_their_own_results() -> None:
    """Isolating each crashing record takes a handful of failed calls; the budget used to count every
    failed call of the whole job, so four bad records in 10,000 left thousands of good ones "not run"."""
    model = SimulatedModel(timeout_s=10.0, per_record_s=0.0001)
    model.crash_on = {700, 2345, 5000, 9999}
    outcome = await run_in_batches(10_000, model, BatchPolicy(timeout_s=10.0))
    failed = {i: r.error for i, r in enumerate(outcome.results) if not r.ok}
    assert failed == {i: "exited with status 1: ValueError" for i in sorted(model.crash_on)}
    assert [r.output for i, r in enumerate(outcome.results) if i not in failed] == [
        i * 10 for i in range(10_000) if i not in failed
    ]
    assert outcome.progress.failed_calls > 16  # more than the budget in all, but never 16 in a row


async def test_a_model_that_times_out_on_everything_ends_timed_out() -> None:
    """One hanging record made the job TIMED_OUT, but a hundred made it FAILED ("timed out after 1 s"):
    the records given up on after the failed-call budget did not count as timed out."""
    model = SimulatedModel(timeout_s=1.0)
    model.slow = {i: 5.0 for i in range(100)}
    outcome = await run_in_batches(100, model, BatchPolicy(timeout_s=1.0))
    status, reason = verdict(outcome)
    assert status == JobStatus.TIMED_OUT and "timed out after 1" in (reason or "")
