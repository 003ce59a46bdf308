"""Running a pipeline: the per-step plan, and the stage-by-stage drive that passes validated data along.

The executor owns *how* one step runs (sandbox, batching, timeouts, output filtering by the step's
declared schema); this module owns *what runs in which order on which resources* and the contract
between stages: each step's outputs are projected onto what it declared, checked against the next
step's exact input schema, and only then handed on. A record that fails at a step carries that step's
name to the end; a step where every record fails stops the run, naming the step — nothing partial is
presented as a result. Per-step metrics come back so each listing's usage and latency can be updated.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from catalog.enums import JobStatus, UsageKind
from catalog.formats import payload_errors, project_to_schema
from infra.errors import BadInput, MlrepoError

CPU = "cpu"
GPU = "gpu"
RESOURCE_KEYS = ("cpu", "memory_mb", "gpu")


def resource_class_for(resources: dict[str, Any] | None) -> str:
    """The queue a step's work goes to: GPU steps need a worker with a GPU, everything else runs on CPU."""
    return GPU if (resources or {}).get("gpu") else CPU


def max_resources(all_resources: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Per-field maximum: what one machine needs to host any single step (steps run one after another)."""
    result: dict[str, Any] = {}
    for resources in all_resources:
        for key in RESOURCE_KEYS:
            value = (resources or {}).get(key)
            if value is not None and (key not in result or value > result[key]):
                result[key] = value
    return result


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One stage of a run: which listing (the trained model for a trained step) on which resources."""

    index: int
    step_id: str
    role: str
    listing_id: str
    listing_name: str
    resource_class: str
    resources: dict[str, Any]
    timeout_s: float | None
    input_format: str | None
    input_schema: dict[str, Any] | None
    output_format: str | None
    output_schema: dict[str, Any] | None

    @property
    def label(self) -> str:
        return f"step {self.index + 1} {self.listing_name!r}"


@dataclass(frozen=True, slots=True)
class RunPlan:
    pipeline_id: str
    steps: tuple[StepPlan, ...]

    @property
    def resources(self) -> dict[str, Any]:
        return max_resources([s.resources for s in self.steps])

    @property
    def resource_classes(self) -> tuple[str, ...]:
        return tuple(s.resource_class for s in self.steps)

    def check_inputs(self, inputs: Sequence[Any]) -> None:
        """Refuse a run whose records do not fit the first step (before any sandbox starts)."""
        if not self.steps:
            raise BadInput("the pipeline has no steps")
        schema = self.steps[0].input_schema
        if schema is None:
            return
        for i, value in enumerate(inputs):
            errors = payload_errors(schema, value, 3)
            if errors:
                raise BadInput(
                    f"input record {i} does not fit {self.steps[0].label} "
                    f"({self.steps[0].input_format}): {'; '.join(errors)}",
                    record=i,
                )


class RecordResult(Protocol):
    """One record's answer from the executor (``executor.contract.RecordOutcome`` has this shape)."""

    @property
    def ok(self) -> bool: ...

    output: Any
    error: str | None


# The executor's way of running one step on a list of inputs: one answer per input, in order.
StepRunner = Callable[[StepPlan, list[Any]], Awaitable[Sequence[RecordResult]]]
StageHook = Callable[["StageProgress"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StageProgress:
    """What ``jobStatus`` streams: which stage is running or done, out of how many."""

    stage: int
    stages: int
    step_id: str
    listing_name: str
    state: str  # running | done
    records_in: int
    records_ok: int = 0


@dataclass(slots=True)
class StepMetrics:
    step_id: str
    listing_id: str
    listing_name: str
    resource_class: str
    records_in: int = 0
    records_ok: int = 0
    duration_ms: float = 0.0

    @property
    def latency_ms_per_record(self) -> float | None:
        return self.duration_ms / self.records_in if self.records_in else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "listing_id": self.listing_id,
            "listing_name": self.listing_name,
            "resource_class": self.resource_class,
            "records_in": self.records_in,
            "records_ok": self.records_ok,
            "duration_ms": round(self.duration_ms, 3),
            "latency_ms_per_record": self.latency_ms_per_record,
        }


@dataclass(slots=True)
class PipelineOutcome:
    """Outputs in input order (an output, or the error and the step it happened at) plus per-step metrics."""

    records: list[dict[str, Any]]
    steps: list[StepMetrics] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return sum(1 for r in self.records if "output" in r)

    @property
    def metrics(self) -> dict[str, Any]:
        """Stored on the job row; ``latency_ms`` (end-to-end per record) is what publishing reports."""
        per_record = [s.latency_ms_per_record for s in self.steps if s.latency_ms_per_record is not None]
        return {
            "latency_ms": sum(per_record) if per_record else None,
            "succeeded": self.succeeded,
            "failed": len(self.records) - self.succeeded,
            "steps": [s.as_dict() for s in self.steps],
        }

    def result_payload(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "succeeded": self.succeeded,
            "failed": len(self.records) - self.succeeded,
        }


class StepFailed(MlrepoError):
    """A whole stage failed: the run is FAILED and the message names the step."""

    code = "STEP_FAILED"


async def run_pipeline(
    plan: RunPlan,
    inputs: Sequence[Any],
    run_step: StepRunner,
    on_stage: StageHook | None = None,
    metrics_sink: list[StepMetrics] | None = None,
) -> PipelineOutcome:
    """Drive ``inputs`` through every stage of ``plan`` with ``run_step`` (the executor's step runner).

    ``metrics_sink`` receives each stage's metrics as it starts — kept also when a stage fails.
    """
    plan.check_inputs(inputs)
    steps = metrics_sink if metrics_sink is not None else []
    outcome = PipelineOutcome(records=[{} for _ in inputs], steps=steps)
    live: dict[int, Any] = dict(enumerate(inputs))  # record index → the payload it carries now
    for stage, step in enumerate(plan.steps):
        nxt = plan.steps[stage + 1] if stage + 1 < len(plan.steps) else None
        order = list(live)
        metrics = StepMetrics(
            step.step_id, step.listing_id, step.listing_name, step.resource_class, len(order)
        )
        outcome.steps.append(metrics)  # before the call: a stage that fails is still accounted for
        if on_stage is not None:
            await on_stage(
                StageProgress(stage, len(plan.steps), step.step_id, step.listing_name, "running", len(order))
            )
        started = time.perf_counter()
        try:
            answers = list(await run_step(step, [live[i] for i in order])) if order else []
        except MlrepoError as exc:
            raise StepFailed(f"{step.label} failed: {exc.message}", step_id=step.step_id) from exc
        finally:
            metrics.duration_ms = (time.perf_counter() - started) * 1000
        if len(answers) != len(order):
            raise StepFailed(
                f"{step.label} answered {len(answers)} of {len(order)} records", step_id=step.step_id
            )
        for i, answer in zip(order, answers, strict=True):
            error = _handover_error(step, nxt, answer)
            if error is None:
                live[i] = _declared(step, answer.output)
                metrics.records_ok += 1
            else:
                del live[i]
                outcome.records[i] = {"error": error, "step_id": step.step_id, "step": step.listing_name}
        if on_stage is not None:
            await on_stage(
                StageProgress(
                    stage,
                    len(plan.steps),
                    step.step_id,
                    step.listing_name,
                    "done",
                    len(order),
                    metrics.records_ok,
                )
            )
        if order and not live:
            first = next(r["error"] for r in outcome.records if "error" in r)
            raise StepFailed(f"{step.label} failed for every record: {first}", step_id=step.step_id)
    for i, value in live.items():
        outcome.records[i] = {"output": value}
    return outcome


@dataclass(frozen=True, slots=True)
class RunVerdict:
    """What a pipeline job stores on its row: status, the error (naming the step), result and metrics."""

    status: str
    error: str | None
    result: dict[str, Any] | None
    metrics: dict[str, Any]


async def run_pipeline_job(
    plan: RunPlan,
    inputs: Sequence[Any],
    run_step: StepRunner,
    *,
    on_stage: StageHook | None = None,
    usage: UsageRecorder | None = None,
    account_id: str | None = None,
) -> RunVerdict:
    """Run and judge: SUCCEEDED with every record's output or error, or FAILED naming the step.

    A failed run keeps no result (nothing partial is shown as a result) but keeps the metrics of the
    stages that ran; per-step usage is reported either way, so a failing listing's success rate drops.
    Bad inputs are not a verdict: ``BadInput`` propagates so the run is refused before it is queued.
    """
    plan.check_inputs(inputs)
    steps: list[StepMetrics] = []
    try:
        outcome = await run_pipeline(plan, inputs, run_step, on_stage, metrics_sink=steps)
    except StepFailed as exc:
        partial = PipelineOutcome(records=[], steps=steps)
        if usage is not None:
            await report_step_metrics(usage, account_id, partial)
        return RunVerdict(JobStatus.FAILED.value, exc.message, None, partial.metrics)
    if usage is not None:
        await report_step_metrics(usage, account_id, outcome)
    return RunVerdict(JobStatus.SUCCEEDED.value, None, outcome.result_payload(), outcome.metrics)


class UsageRecorder(Protocol):
    """``catalog.usage.UsageService``: where a step's run is counted for its listing."""

    async def record(
        self,
        listing_id: str,
        kind: str,
        *,
        account_id: str | None = ...,
        success: bool | None = ...,
        latency_ms: float | None = ...,
        search_id: str | None = ...,
    ) -> Any: ...


async def report_step_metrics(usage: UsageRecorder, account_id: str | None, outcome: PipelineOutcome) -> None:
    """Each step's listing gets one ``pipeline_step`` usage event: success and per-record latency.

    That is what moves its usage count, success rate and latency (and so its ranking) after a run.
    """
    for step in outcome.steps:
        if step.records_in == 0:
            continue
        await usage.record(
            step.listing_id,
            UsageKind.PIPELINE_STEP.value,
            account_id=account_id,
            success=step.records_ok > 0,
            latency_ms=step.latency_ms_per_record,
        )


def _declared(step: StepPlan, output: Any) -> Any:
    return project_to_schema(step.output_schema, output) if step.output_schema is not None else output


def _handover_error(step: StepPlan, nxt: StepPlan | None, answer: RecordResult) -> str | None:
    """Why this record cannot go on from ``step`` (its own error, or a misfit with the next input)."""
    if not answer.ok:
        return f"{step.label}: {answer.error}"
    value = _declared(step, answer.output)
    if step.output_schema is not None:
        errors = payload_errors(step.output_schema, value, 3)
        if errors:
            return f"{step.label} emitted output outside its declared schema: {'; '.join(errors)}"
    if nxt is not None and nxt.input_schema is not None:
        errors = payload_errors(nxt.input_schema, value, 3)
        if errors:
            return f"{step.label} output does not fit {nxt.label}: {'; '.join(errors)}"
    return None


def median_latency(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None
