"""Running a pipeline: the per-step plan, and the stage-by-stage drive that passes validated data along.

The executor owns *how* one step runs (sandbox, batching, timeouts, output filtering by the step's
declared schema); this module owns *what runs in which order on which resources* and the contract
between stages: each step's outputs are projected onto what it declared, checked against the next
step's exact input schema, and only then handed on. A record that fails at a step carries that step's
name to the end; a step where every record fails stops the run, naming the step — nothing partial is
presented as a result. Per-step metrics come back so each listing's usage and latency can be updated.

A run may be fed in chunks (``stream_pipeline_job``): each chunk goes through every stage and its
outputs are handed to the caller before the next chunk is read, so a dataset of any size runs in bounded
memory. Per-step metrics add up over the chunks, and "every record failed at a step" is judged over the
whole run, so the verdict is the one the same records would get in one piece.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
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
                    f"records[{i}] does not fit {self.steps[0].label} "
                    f"({self.steps[0].input_format}): {'; '.join(errors)}",
                    field=f"records[{i}]",  # as a listing's run names a record that does not fit
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
    records_done: int = 0  # records through every stage in the chunks before this one


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
        return run_metrics(self.steps, self.succeeded, len(self.records) - self.succeeded)


def run_metrics(steps: Sequence[StepMetrics], succeeded: int, failed: int) -> dict[str, Any]:
    """Stored on the job row; ``latency_ms`` (end-to-end per record) is what publishing reports."""
    per_record = [s.latency_ms_per_record for s in steps if s.latency_ms_per_record is not None]
    return {
        "latency_ms": sum(per_record) if per_record else None,
        "succeeded": succeeded,
        "failed": failed,
        "steps": [s.as_dict() for s in steps],
    }


class StepFailed(MlrepoError):
    """A whole stage failed: the run is FAILED and the message names the step."""

    code = "STEP_FAILED"


class PipelineStream:
    """One run's drive, a chunk of records at a time: each chunk goes through every stage of ``plan``
    with ``run_step`` (the executor's step runner), and per-step metrics add up over the chunks.

    ``steps`` receives each stage's metrics when the stage first runs — kept also when a stage fails.
    """

    def __init__(
        self,
        plan: RunPlan,
        run_step: StepRunner,
        on_stage: StageHook | None = None,
        steps: list[StepMetrics] | None = None,
    ) -> None:
        self.plan = plan
        self.run_step = run_step
        self.on_stage = on_stage
        self.steps = steps if steps is not None else []
        self.first_errors: dict[int, str] = {}  # stage → the first record error it gave
        self.succeeded = 0
        self.failed = 0

    @property
    def metrics(self) -> dict[str, Any]:
        return run_metrics(self.steps, self.succeeded, self.failed)

    def _metrics_of(self, stage: int, step: StepPlan) -> StepMetrics:
        if stage == len(self.steps):  # stages first run in order: the next one appends its metrics
            self.steps.append(
                StepMetrics(step.step_id, step.listing_id, step.listing_name, step.resource_class)
            )
        return self.steps[stage]

    async def _tell(self, stage: int, step: StepPlan, state: str, records_in: int, records_ok: int) -> None:
        if self.on_stage is not None:
            done = self.succeeded + self.failed
            await self.on_stage(
                StageProgress(
                    stage,
                    len(self.plan.steps),
                    step.step_id,
                    step.listing_name,
                    state,
                    records_in,
                    records_ok,
                    done,
                )
            )

    async def run_chunk(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        """The chunk's outcomes in input order: ``{output}``, or ``{error, step_id, step}``. A stage whose
        call fails (or answers the wrong number of records) raises ``StepFailed``; records that fail one by
        one do not stop the run here (``check`` judges the run when every chunk has gone through)."""
        self.plan.check_inputs(inputs)
        records: list[dict[str, Any]] = [{} for _ in inputs]
        live: dict[int, Any] = dict(enumerate(inputs))  # record index → the payload it carries now
        for stage, step in enumerate(self.plan.steps):
            if inputs and not live:
                break  # every record of this chunk failed at an earlier stage
            nxt = self.plan.steps[stage + 1] if stage + 1 < len(self.plan.steps) else None
            order = list(live)
            metrics = self._metrics_of(stage, step)  # before the call: a stage that fails still counts
            metrics.records_in += len(order)
            await self._tell(stage, step, "running", len(order), 0)
            started = time.perf_counter()
            try:
                answers = list(await self.run_step(step, [live[i] for i in order])) if order else []
            except MlrepoError as exc:
                raise StepFailed(f"{step.label} failed: {exc.message}", step_id=step.step_id) from exc
            finally:
                metrics.duration_ms += (time.perf_counter() - started) * 1000
            if len(answers) != len(order):
                raise StepFailed(
                    f"{step.label} answered {len(answers)} of {len(order)} records", step_id=step.step_id
                )
            ok = 0
            for i, answer in zip(order, answers, strict=True):
                error = _handover_error(step, nxt, answer)
                if error is None:
                    live[i] = _declared(step, answer.output)
                    ok += 1
                else:
                    del live[i]
                    records[i] = {"error": error, "step_id": step.step_id, "step": step.listing_name}
                    self.first_errors.setdefault(stage, error)
            metrics.records_ok += ok
            await self._tell(stage, step, "done", len(order), ok)
        for i, value in live.items():
            records[i] = {"output": value}
        self.succeeded += len(live)
        self.failed += len(inputs) - len(live)
        return records

    def check(self) -> None:
        """Raise ``StepFailed`` naming the first step that failed every record it was given in the run."""
        for stage, metrics in enumerate(self.steps):
            if metrics.records_in and not metrics.records_ok:
                step = self.plan.steps[stage]
                first = self.first_errors[stage]
                raise StepFailed(f"{step.label} failed for every record: {first}", step_id=step.step_id)


async def run_pipeline(
    plan: RunPlan,
    inputs: Sequence[Any],
    run_step: StepRunner,
    on_stage: StageHook | None = None,
    metrics_sink: list[StepMetrics] | None = None,
) -> PipelineOutcome:
    """Drive ``inputs`` through every stage of ``plan`` in one piece (``PipelineStream`` of one chunk).

    ``metrics_sink`` receives each stage's metrics as it starts — kept also when a stage fails.
    """
    stream = PipelineStream(plan, run_step, on_stage, metrics_sink)
    records = await stream.run_chunk(inputs)
    stream.check()
    return PipelineOutcome(records=records, steps=stream.steps)


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
    """Run and judge in one piece: SUCCEEDED with every record's output or error (``result.records``), or
    FAILED naming the step (see ``stream_pipeline_job``)."""
    plan.check_inputs(inputs)
    records: list[dict[str, Any]] = []

    async def keep(chunk: list[dict[str, Any]]) -> None:
        records.extend(chunk)

    verdict = await stream_pipeline_job(
        plan, _one_chunk(inputs), run_step, keep, on_stage=on_stage, usage=usage, account_id=account_id
    )
    if verdict.result is None:
        return verdict
    return RunVerdict(verdict.status, verdict.error, {"records": records, **verdict.result}, verdict.metrics)


async def stream_pipeline_job(
    plan: RunPlan,
    chunks: AsyncIterable[Sequence[Any]],
    run_step: StepRunner,
    write: Callable[[list[dict[str, Any]]], Awaitable[None]],
    *,
    on_stage: StageHook | None = None,
    usage: UsageRecorder | None = None,
    account_id: str | None = None,
) -> RunVerdict:
    """Run ``chunks`` one after another through every stage, handing each chunk's outcomes to ``write``
    before the next chunk is read; then judge: SUCCEEDED with the counts (``result``), or FAILED naming
    the step that failed every record it was given (or whose call failed).

    A failed run keeps no result — the caller drops what ``write`` got: nothing partial is shown as a
    result — but keeps the metrics of the stages that ran; per-step usage is reported either way, so a
    failing listing's success rate drops. Bad inputs are not a verdict: ``BadInput`` propagates.
    """
    stream = PipelineStream(plan, run_step, on_stage)
    try:
        async for chunk in chunks:
            await write(await stream.run_chunk(chunk))
        stream.check()
    except StepFailed as exc:
        if usage is not None:
            await report_step_metrics(usage, account_id, stream.steps)
        return RunVerdict(JobStatus.FAILED.value, exc.message, None, run_metrics(stream.steps, 0, 0))
    if usage is not None:
        await report_step_metrics(usage, account_id, stream.steps)
    summary = {"succeeded": stream.succeeded, "failed": stream.failed}
    return RunVerdict(JobStatus.SUCCEEDED.value, None, summary, stream.metrics)


async def _one_chunk(inputs: Sequence[Any]) -> AsyncIterable[Sequence[Any]]:
    yield inputs


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


async def report_step_metrics(
    usage: UsageRecorder, account_id: str | None, steps: Sequence[StepMetrics]
) -> None:
    """Each step's listing gets one ``pipeline_step`` usage event: success and per-record latency.

    That is what moves its usage count, success rate and latency (and so its ranking) after a run.
    """
    for step in steps:
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
