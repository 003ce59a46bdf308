"""Running pipelines: the per-step plan, and the demo chain run for real, step by step, in bubblewrap.

Each step runs through the executor's own inference path (``executor.inference.run_inference``: a fresh
sandbox copy per call, batching, output filtering by the declared schema); the pipeline module passes
each step's validated output on to the next.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.pipelines import PipelineService
from catalog.pipelines.running import (
    RunPlan,
    RunVerdict,
    StageProgress,
    StepFailed,
    StepPlan,
    StepRunner,
    run_pipeline,
    run_pipeline_job,
    stream_pipeline_job,
)
from executor.contract import RecordOutcome
from executor.inference import InferencePlan, run_inference
from executor.output_filter import OutputFilter
from executor.runtimes import BwrapRuntime, Package
from executor.runtimes.base import Limits
from infra.errors import BadInput
from infra.tables import Listing, ListingVersion
from tests.services import require_service

from .demo_chain import gray

MakeListing = Callable[..., Awaitable[Listing]]
PACKAGES = Path(__file__).parent / "packages"


@pytest.fixture(scope="module")
def bwrap(tmp_path_factory: pytest.TempPathFactory) -> BwrapRuntime:
    require_service("bubblewrap", BwrapRuntime.available(), "bwrap/prlimit/setpriv not installed")
    require_service("bubblewrap", os.geteuid() == 0, "starting sandboxes as other uids needs root")
    return BwrapRuntime(work_dir=tmp_path_factory.mktemp("bwrap-work"))


def sandboxed(runtime: BwrapRuntime, packages: dict[str, str]):
    """The executor's per-step inference, with each listing's code package looked up by listing id."""

    async def run_step(step: StepPlan, inputs: list[Any]) -> Sequence[RecordOutcome]:
        package = Package(entrypoint=("python3", "model.py"), code_dir=PACKAGES / packages[step.listing_id])
        plan = InferencePlan(
            package=package,
            limits=Limits(timeout_s=step.timeout_s or 20.0),
            output_filter=OutputFilter.for_listing(step.output_format, step.output_schema),
        )
        return (await run_inference(runtime, plan, inputs)).results

    return run_step


def demo_packages(vision: dict[str, Listing], cropper: str = "cropper") -> dict[str, str]:
    """Which code package under ``packages/`` each demo listing runs."""
    return {
        vision["detector"].id: "detector",
        vision["cropper"].id: cropper,
        vision["classifier"].id: "classifier",
    }


async def demo_pipeline(service: PipelineService, requester: Actor, vision: dict[str, Listing]) -> str:
    pipeline = await service.create(requester, "street scenes")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    change = await service.add_step(requester, pipeline.id, vision["classifier"].id)
    assert len(change.inserted_conditioning_step_ids) == 1
    return pipeline.id


async def test_plan_gives_each_step_its_resource_class(
    service: PipelineService, requester: Actor, vision: dict[str, Listing]
) -> None:
    plan = await service.plan_run(requester, await demo_pipeline(service, requester, vision))
    assert [s.listing_name for s in plan.steps] == [
        "street-object-detector",
        "boxes-to-crops",
        "crop-classifier",
    ]
    assert plan.resource_classes == ("gpu", "cpu", "cpu")
    assert plan.resources == {"cpu": 2, "memory_mb": 2048, "gpu": 1}
    assert [s.role for s in plan.steps] == ["step", "conditioning", "step"]


async def test_a_pipeline_that_cannot_run_says_why(
    service: PipelineService, requester: Actor, make_listing: MakeListing, vision: dict[str, Listing]
) -> None:
    empty = await service.create(requester, "empty")
    with pytest.raises(BadInput, match="has no steps"):
        await service.plan_run(requester, empty.id)
    speech = await make_listing("speech-to-text", input_format="audio", output_format="text")
    trainable = await make_listing(
        "trainable",
        kind="algorithm",
        input_format="image",
        output_format="bounding-boxes",
        training_resources={"cpu": 1},
    )
    gap = await service.create(requester, "gap")
    await service.add_step(requester, gap.id, trainable.id)
    await service.add_step(requester, gap.id, speech.id)
    with pytest.raises(BadInput) as err:
        await service.plan_run(requester, gap.id)
    assert "open connection: 'trainable' emits bounding-boxes@1 but 'speech-to-text' needs audio@1" in str(
        err.value
    )
    assert "'trainable' must be trained first" in str(err.value)


async def test_demo_chain_runs_end_to_end_in_the_sandbox(
    service: PipelineService,
    requester: Actor,
    vision: dict[str, Listing],
    bwrap: BwrapRuntime,
    catalog: CatalogApp,
) -> None:
    plan = await service.plan_run(requester, await demo_pipeline(service, requester, vision))
    packages = demo_packages(vision)
    stages: list[StageProgress] = []

    async def on_stage(progress: StageProgress) -> None:
        stages.append(progress)

    lamp = gray(6, 5, {(1, 1), (2, 1), (1, 2), (2, 2)})
    sign = gray(6, 5, {(4, 3), (5, 3)}, level=150)
    odd = gray(13, 1, {(0, 0)})
    verdict = await run_pipeline_job(
        plan,
        [lamp, sign, odd],
        sandboxed(bwrap, packages),
        on_stage=on_stage,
        usage=catalog.usage,
        account_id=requester.account_id,
    )
    assert (verdict.status, verdict.error) == ("succeeded", None)
    records = verdict.result["records"]
    assert records[0] == {
        "output": {
            "predictions": [
                {"value": "lamp", "location": {"x": 1, "y": 1, "width": 2, "height": 2}, "confidence": 1.0}
            ]
        }
    }
    assert records[1]["output"]["predictions"][0]["value"] == "sign"
    assert records[2] == {
        "error": "step 1 'street-object-detector': unsupported image width 13",
        "step_id": plan.steps[0].step_id,
        "step": "street-object-detector",
    }
    assert [(s.stage, s.state, s.records_in, s.records_ok) for s in stages] == [
        (0, "running", 3, 0),
        (0, "done", 3, 2),
        (1, "running", 2, 0),
        (1, "done", 2, 2),
        (2, "running", 2, 0),
        (2, "done", 2, 2),
    ]
    metrics = verdict.metrics
    assert (
        (metrics["succeeded"], metrics["failed"])
        == (2, 1)
        == (verdict.result["succeeded"], verdict.result["failed"])
    )
    assert [s["records_in"] for s in metrics["steps"]] == [3, 2, 2]
    assert metrics["latency_ms"] > 0 and all(s["duration_ms"] > 0 for s in metrics["steps"])

    # Metrics went back to each step's listing: a usage event, success, and the measured latency.
    for step, measured in zip(plan.steps, metrics["steps"], strict=True):
        stats = await catalog.usage.stats(step.listing_id)
        assert (stats.usage_count, stats.success_count) == (1, 1), step.listing_name
        assert stats.latency_p50_ms == pytest.approx(measured["latency_ms_per_record"])


async def test_a_failing_step_fails_the_run_and_is_named(
    service: PipelineService,
    requester: Actor,
    vision: dict[str, Listing],
    bwrap: BwrapRuntime,
    catalog: CatalogApp,
) -> None:
    plan = await service.plan_run(requester, await demo_pipeline(service, requester, vision))
    run_step = sandboxed(bwrap, demo_packages(vision, cropper="broken"))
    inputs = [gray(2, 2, {(0, 0)})]
    with pytest.raises(StepFailed, match="step 2 'boxes-to-crops' failed for every record") as err:
        await run_pipeline(plan, inputs, run_step)
    assert err.value.details["step_id"] == plan.steps[1].step_id

    verdict = await run_pipeline_job(
        plan, inputs, run_step, usage=catalog.usage, account_id=requester.account_id
    )
    assert verdict.status == "failed" and verdict.result is None
    assert verdict.error.startswith(
        "step 2 'boxes-to-crops' failed for every record: step 2 'boxes-to-crops':"
    )
    assert [(s["listing_name"], s["records_ok"]) for s in verdict.metrics["steps"]] == [
        ("street-object-detector", 1),
        ("boxes-to-crops", 0),
    ]
    cropper = await catalog.usage.stats(vision["cropper"].id)
    assert (cropper.usage_count, cropper.failure_count) == (1, 1)
    assert (await catalog.usage.stats(vision["classifier"].id)).usage_count == 0


async def test_inputs_must_fit_the_first_step(
    service: PipelineService, requester: Actor, vision: dict[str, Listing]
) -> None:
    plan: RunPlan = await service.plan_run(requester, await demo_pipeline(service, requester, vision))

    async def never(step: StepPlan, inputs: list[Any]) -> Sequence[RecordOutcome]:
        raise AssertionError("no step may start when the inputs are wrong")

    # Named as a listing's run names it (records[1], 0-based, and the field): the message said "input
    # record 1" beside "step 1" (1-based) and the error named no field.
    with pytest.raises(
        BadInput, match=r"records\[1\] does not fit step 1 'street-object-detector' \(image@1\)"
    ) as refused:
        await run_pipeline(plan, [gray(1, 1, set()), {"text": "not an image"}], never)
    assert refused.value.details["field"] == "records[1]"


async def test_a_pipeline_listing_published_as_code_is_one_step(
    service: PipelineService, requester: Actor, make_listing: MakeListing, vision: dict[str, Listing], db
) -> None:
    """A pipeline published as a code package runs as one program; as a step, planning wanted the stored
    steps only publishPipeline leaves ("has no stored steps to run") and refused the whole pipeline."""
    packaged = await make_listing(
        "packaged-crop-classifier",
        kind="pipeline",
        package="classifier",
        input_format="image-crops@1",
        output_format="predictions@1",
    )
    described = await make_listing(
        "described-crop-classifier",
        kind="pipeline",
        input_format="image-crops@1",
        output_format="predictions@1",
    )
    async with db.session() as session:
        session.add(ListingVersion(listing_id=described.id, version="1.0.0", artifact_kind="metadata"))
    pipelines = {}
    for name, last in (("packaged", packaged), ("described", described)):
        pipeline = await service.create(requester, name)
        await service.add_step(requester, pipeline.id, vision["detector"].id)
        await service.add_step(requester, pipeline.id, last.id)
        pipelines[name] = pipeline.id

    plan = await service.plan_run(requester, pipelines["packaged"])
    assert [s.listing_name for s in plan.steps] == [
        "street-object-detector",
        "boxes-to-crops",
        "packaged-crop-classifier",
    ]
    with pytest.raises(BadInput, match="'described-crop-classifier' has no stored steps to run"):
        await service.plan_run(requester, pipelines["described"])


async def chunks_of(*chunks: list[Any]) -> AsyncIterator[list[Any]]:
    for chunk in chunks:
        yield chunk


class StreamedRun:
    """The demo chain streamed in bwrap, chunk by chunk (``stream_pipeline_job``), with what it handed
    over to be written (``written``: each chunk's outcomes, in order) and its stage reports."""

    def __init__(self, plan: RunPlan, run_step: StepRunner, catalog: CatalogApp, requester: Actor) -> None:
        self.plan, self.run_step, self.catalog, self.requester = plan, run_step, catalog, requester
        self.written: list[list[dict[str, Any]]] = []
        self.stages: list[StageProgress] = []

    async def write(self, records: list[dict[str, Any]]) -> None:
        self.written.append(records)

    async def on_stage(self, progress: StageProgress) -> None:
        self.stages.append(progress)

    async def __call__(self, *chunks: list[Any]) -> RunVerdict:
        return await stream_pipeline_job(
            self.plan,
            chunks_of(*chunks),
            self.run_step,
            self.write,
            on_stage=self.on_stage,
            usage=self.catalog.usage,
            account_id=self.requester.account_id,
        )


@pytest.fixture
async def streamed(
    service: PipelineService,
    requester: Actor,
    vision: dict[str, Listing],
    bwrap: BwrapRuntime,
    catalog: CatalogApp,
) -> Callable[[str], Awaitable[StreamedRun]]:
    """A streamed run of the demo chain whose cropper runs the given package."""
    plan = await service.plan_run(requester, await demo_pipeline(service, requester, vision))

    async def make(cropper: str) -> StreamedRun:
        return StreamedRun(plan, sandboxed(bwrap, demo_packages(vision, cropper)), catalog, requester)

    return make


async def test_a_run_fed_in_chunks_is_judged_over_all_its_records(streamed, catalog: CatalogApp) -> None:
    """A run streamed a chunk at a time: each chunk goes through every stage and is written before the
    next is read; a chunk whose records all fail at a step does not fail a run whose other records pass,
    and per-step metrics and usage add up over the chunks (one usage event per step, not per chunk)."""
    lamp = gray(6, 5, {(1, 1), (2, 1), (1, 2), (2, 2)})
    sign = gray(6, 5, {(4, 3), (5, 3)}, level=150)
    odd = gray(13, 1, {(0, 0)})
    run = await streamed("cropper")
    verdict = await run([lamp, odd], [odd], [sign])
    written, stages = run.written, run.stages
    assert (verdict.status, verdict.error, verdict.result) == (
        "succeeded",
        None,
        {"succeeded": 2, "failed": 2},
    )
    assert [[next(iter(r)) for r in chunk] for chunk in written] == [
        ["output", "error"],
        ["error"],
        ["output"],
    ]
    assert written[2][0]["output"]["predictions"][0]["value"] == "sign"
    assert [s["records_in"] for s in verdict.metrics["steps"]] == [4, 2, 2]
    assert [s["records_ok"] for s in verdict.metrics["steps"]] == [2, 2, 2]
    assert (verdict.metrics["succeeded"], verdict.metrics["failed"]) == (2, 2)
    # The second chunk stopped at step 1 (nothing left to hand on); progress counts finished records.
    assert [(s.stage, s.state, s.records_in, s.records_done) for s in stages if s.state == "done"] == [
        (0, "done", 2, 0),
        (1, "done", 1, 0),
        (2, "done", 1, 0),
        (0, "done", 1, 2),
        (0, "done", 1, 3),
        (1, "done", 1, 3),
        (2, "done", 1, 3),
    ]
    for step in run.plan.steps:
        stats = await catalog.usage.stats(step.listing_id)
        assert (stats.usage_count, stats.success_count) == (1, 1), step.listing_name


async def test_a_step_that_fails_every_record_of_every_chunk_fails_the_streamed_run(
    streamed, catalog: CatalogApp, vision: dict[str, Listing]
) -> None:
    run = await streamed("broken")
    verdict = await run([gray(2, 2, {(0, 0)})], [gray(3, 2, {(1, 1)})])
    written = run.written
    assert verdict.status == "failed" and verdict.result is None and len(written) == 2
    assert verdict.error.startswith(
        "step 2 'boxes-to-crops' failed for every record: step 2 'boxes-to-crops':"
    )
    assert [(s["listing_name"], s["records_in"], s["records_ok"]) for s in verdict.metrics["steps"]] == [
        ("street-object-detector", 2, 2),
        ("boxes-to-crops", 2, 0),
    ]
    cropper = await catalog.usage.stats(vision["cropper"].id)
    assert (cropper.usage_count, cropper.failure_count) == (1, 1)
