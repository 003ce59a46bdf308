"""``runJob`` on a pipeline through the executor: published packages, real bubblewrap sandboxes, one job.

The three demo packages are published through the real publishing workflow (so they have versions and
artifacts), the requester builds the pipeline (the conditioner is inserted by the service), and the job
runs every stage in its own sandbox copy with its own allocation.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.enums import JobStatus
from catalog.pipelines import PipelineService, StepRole
from executor.jobs import JobService
from executor.pipeline_jobs import submit_pipeline
from executor.runtimes import BwrapRuntime
from infra.artifacts import ArtifactStore
from infra.errors import BadInput
from infra.settings import Settings
from infra.tables import Job, Listing, ListingVersion, PipelineStep, utcnow
from tests.services import require_service

from .demo_chain import build_trainable_chain, gray, publish_parts

PACKAGES = Path(__file__).parent / "packages"


@pytest.fixture
async def app(settings: Settings, encoder) -> AsyncIterator[CatalogApp]:
    require_service("bubblewrap", BwrapRuntime.available(), "bwrap/prlimit/setpriv not installed")
    require_service("bubblewrap", os.geteuid() == 0, "starting sandboxes as other uids needs root")
    bwrap_settings = settings.model_copy(update={"runtime": "bwrap"})
    catalog = await CatalogApp.open(bwrap_settings, encoder=encoder)
    yield catalog
    await catalog.close()


async def test_run_job_on_a_pipeline_runs_every_stage_in_the_sandbox(
    app: CatalogApp, producer: Actor, requester: Actor
) -> None:
    ids = await publish_parts(app, producer, ("detector", "cropper", "classifier"), with_dataset=False)
    pipelines = PipelineService(app.db, app.demand)
    pipeline = await pipelines.create(requester, "street scenes")
    await pipelines.add_step(requester, pipeline.id, ids["detector"])
    change = await pipelines.add_step(requester, pipeline.id, ids["classifier"])
    assert [s.role for s in change.pipeline.steps] == [StepRole.STEP, StepRole.CONDITIONING, StepRole.STEP]

    claimed: list[str] = []

    class Recorder:  # the job queue: the test claims and runs the job itself, as a worker would
        async def enqueue(self, job_id: str, resource_class: str, attempt: int) -> None:
            claimed.append(job_id)

        async def close(self) -> None:
            return None

    jobs = JobService(app.settings, app, queue=Recorder())
    with pytest.raises(BadInput, match="does not fit step 1"):
        await submit_pipeline(jobs, requester, [{"text": "no"}], pipeline_id=pipeline.id)
    job_id = await submit_pipeline(jobs, requester, [gray(4, 3, {(1, 1), (2, 1)})], pipeline_id=pipeline.id)
    assert claimed == [job_id]

    assert await jobs.run(job_id) == "succeeded"
    view = await jobs.get(requester, job_id)
    assert view.resources["stages"] == ["cpu", "cpu", "cpu"] and view.error is None
    assert view.result == {"succeeded": 1, "failed": 0} and view.outputs_count == 1
    async with app.db.session() as session:
        stored = await session.get(Job, job_id)
        assert await jobs.all_outputs(view) == [
            {
                "output": {
                    "predictions": [
                        {
                            "value": "lamp",
                            "location": {"x": 1, "y": 1, "width": 2, "height": 1},
                            "confidence": 1.0,
                        }
                    ]
                }
            }
        ]
        assert [s["listing_name"] for s in stored.metrics["steps"]] == [
            "street-object-detector",
            "boxes-to-crops",
            "crop-classifier",
        ]
        assert stored.progress["stage"] == 3 and stored.progress["state"] == "done"
        for listing_id in ids.values():
            assert (await session.get(Listing, listing_id)).usage_count == 1


class Recorder:
    """The job queue: the test claims and runs each job itself, as a worker would."""

    def __init__(self) -> None:
        self.queued: list[str] = []

    async def enqueue(self, job_id: str, resource_class: str, attempt: int) -> None:
        self.queued.append(job_id)

    async def close(self) -> None:
        return None


async def street_scenes(app: CatalogApp, producer: Actor, requester: Actor) -> str:
    """The detector → (conditioning) → classifier pipeline."""
    ids = await publish_parts(app, producer, ("detector", "cropper", "classifier"), with_dataset=False)
    pipeline = await app.pipelines.create(requester, "street scenes")
    await app.pipelines.add_step(requester, pipeline.id, ids["detector"])
    await app.pipelines.add_step(requester, pipeline.id, ids["classifier"])
    return pipeline.id


async def frames(app: CatalogApp, producer: Actor, images: list[dict], name: str = "frames") -> str:
    """A dataset listing of ``images``, one ``{"input": image}`` line each."""
    data = "".join(json.dumps({"input": image}) + "\n" for image in images).encode()
    digest = ArtifactStore.from_settings(app.settings).put_bytes(data).digest
    async with app.db.session() as session:
        dataset = Listing(
            kind="dataset", name=name, category="cv", owner_id=producer.account_id, visibility="public"
        )
        session.add(dataset)
        await session.flush()
        session.add(
            ListingVersion(
                listing_id=dataset.id, version="1.0.0", artifact_kind="dataset", artifact_digest=digest
            )
        )
    return dataset.id


async def test_a_pipeline_fed_a_dataset_streams_it_chunk_by_chunk_through_every_stage(
    app: CatalogApp, producer: Actor, requester: Actor
) -> None:
    """A pipeline ran its records stage by stage in memory, so a dataset feeding one was copied into the
    job row and refused past ``job_max_inline_records``. Now the row pins the dataset's stored file and
    the worker reads it ``job_max_batch_records`` at a time, each chunk through every stage (the
    conditioning step included) and written out before the next is read."""
    lamp, dark = gray(4, 3, {(1, 1), (2, 1)}), gray(4, 3, set())
    odd = gray(13, 1, {(0, 0)})  # the detector cannot take it: an error naming step 1
    images = [lamp, dark, odd, lamp, lamp]
    pipeline_id, dataset_id = (
        await street_scenes(app, producer, requester),
        await frames(app, producer, images),
    )
    queue = Recorder()
    settings = app.settings.model_copy(update={"job_max_inline_records": 2, "job_max_batch_records": 2})
    jobs = JobService(settings, app, queue=queue)
    with pytest.raises(BadInput, match="at most 2 records per job in the request"):
        await jobs.submit(
            requester, records=[lamp] * 3, dataset_listing_id=dataset_id, pipeline_id=pipeline_id
        )
    view = await jobs.submit(
        requester, records=[dark], dataset_listing_id=dataset_id, pipeline_id=pipeline_id
    )
    async with app.db.session() as session:
        inputs = (await session.get(Job, view.id)).inputs
    assert inputs["records"] == [dark] and inputs["dataset_records"] == 5
    assert inputs["dataset_listing_id"] == dataset_id and inputs["dataset_digest"].startswith("sha256:")

    assert await jobs.run(view.id) == "succeeded"
    final = await jobs.get(requester, view.id)
    assert final.result == {"succeeded": 5, "failed": 1} and final.outputs_count == 6
    outputs = await jobs.all_outputs(final)
    found = [
        [p["value"] for p in r["output"]["predictions"]] if "output" in r else r["step"] for r in outputs
    ]
    assert found == [["lamp"], [], "street-object-detector", ["lamp"], ["lamp"], []]
    steps = final.metrics["steps"]
    assert [(s["listing_name"], s["records_in"], s["records_ok"]) for s in steps] == [
        ("street-object-detector", 6, 5),
        ("boxes-to-crops", 5, 5),
        ("crop-classifier", 5, 5),
    ]
    assert final.progress["records_done"] == 4 and final.progress["records_total"] == 6  # last chunk's start
    async with app.db.session() as session:
        for step in steps:  # one usage event per step for the whole run, not one per chunk
            assert (await session.get(Listing, step["listing_id"])).usage_count == 1


async def test_a_pipeline_dataset_is_checked_at_submission_and_a_cancel_stops_the_stream(
    app: CatalogApp, producer: Actor, requester: Actor
) -> None:
    lamp = gray(4, 3, {(1, 1), (2, 1)})
    pipeline_id, dataset_id = (
        await street_scenes(app, producer, requester),
        await frames(app, producer, [lamp] * 6),
    )
    bad_dataset = await frames(app, producer, [lamp, {"text": "no"}], "texts")
    jobs = JobService(app.settings.model_copy(update={"job_max_batch_records": 1}), app, queue=Recorder())
    with pytest.raises(BadInput, match="the dataset's record 2 does not match") as refused:
        await jobs.submit(requester, dataset_listing_id=bad_dataset, pipeline_id=pipeline_id)
    assert refused.value.details["field"] == "datasetListingId"

    view = await jobs.submit(requester, dataset_listing_id=dataset_id, pipeline_id=pipeline_id)
    running = asyncio.create_task(jobs.run(view.id))
    while (await jobs.get(requester, view.id)).progress.get("records_done", 0) < 1:
        assert not running.done(), "the job ended before it could be cancelled"
        await asyncio.sleep(0.05)
    await jobs.cancel(requester, view.id)
    assert await running == "cancelled"
    final = await jobs.get(requester, view.id)
    assert final.outputs_digest is None and final.outputs_count is None and final.result is None
    assert not list((app.settings.data_dir / "job-staging").iterdir())  # the written chunks are gone
    async with app.db.session() as session:
        for step in (await app.pipelines.plan_run(requester, pipeline_id)).steps:
            assert (await session.get(Listing, step.listing_id)).usage_count == 0


async def test_a_pipeline_training_retried_after_its_worker_died_keeps_the_model_already_trained(
    app: CatalogApp, producer: Actor, requester: Actor, settings: Settings
) -> None:
    """The worker died after a step's training job had written its model, before the model was attached
    to the step: the retry trained that step again in a new job, leaving the first model an orphan.
    The retry now takes the step's earlier job (and so its model)."""
    ids = await publish_parts(app, producer)
    pipeline_id = await build_trainable_chain(app.pipelines, requester, ids)
    jobs = JobService(settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2}), app)
    try:
        view = await jobs.submit(requester, task="training", pipeline_id=pipeline_id)
        first = [v async for v in jobs.watch(requester, view.id)][-1]
        assert first.status == JobStatus.SUCCEEDED, first.error
        [step] = first.result["trained_steps"]
        async with app.db.session() as session:  # what a death right after the step's job leaves
            await session.execute(
                update(PipelineStep).where(PipelineStep.id == step["step_id"]).values(trained_listing_id=None)
            )
            row = await session.get(Job, view.id)
            row.status, row.result, row.finished_at = JobStatus.RUNNING.value, None, None
            row.heartbeat_at = utcnow() - timedelta(hours=1)
        await app.pipelines.delete(requester, first.result["post_training_pipeline_id"])
        assert await jobs.reconcile() == {"requeued": 1, "failed": 0}
        retried = [v async for v in jobs.watch(requester, view.id)][-1]
    finally:
        await jobs.queue.close()
    assert retried.status == JobStatus.SUCCEEDED, retried.error
    [again] = retried.result["trained_steps"]
    assert (again["job_id"], again["model_listing_id"]) == (step["job_id"], step["model_listing_id"])
    async with app.db.session() as session:
        models = (
            await session.scalars(
                select(Listing.id).where(Listing.owner_id == requester.account_id, Listing.kind == "model")
            )
        ).all()
    assert models == [step["model_listing_id"]]


async def test_a_pipeline_with_a_step_without_code_is_refused_at_submission(
    app: CatalogApp, producer: Actor, requester: Actor
) -> None:
    """A step on a catalog entry (the demo catalog's listings, an import) has nothing to run: the job was
    queued and failed in the worker with "step 1 ... declares no entrypoint to run"."""
    entry = await app.listings.create(
        producer,
        {
            "name": "described-labeller",
            "kind": "model",
            "category": "nlp",
            "input_format": "text",
            "output_format": "class-label",
        },
    )
    pipeline = await app.pipelines.create(requester, "described only")
    await app.pipelines.add_step(requester, pipeline.id, entry.id)
    queued: list[str] = []

    class Recorder:
        async def enqueue(self, job_id: str, resource_class: str, attempt: int) -> None:
            queued.append(job_id)

        async def close(self) -> None:
            return None

    jobs = JobService(app.settings, app, queue=Recorder())
    with pytest.raises(BadInput, match="step 1 'described-labeller' cannot be run: it has no published code"):
        await submit_pipeline(jobs, requester, ["great"], pipeline_id=pipeline.id)
    async with app.db.session() as session:
        assert (await session.scalars(select(Job.id))).all() == [] and queued == []
