"""Training a pipeline step on what the steps in front of it hand it: published packages, real bubblewrap
sandboxes, SQLite and PostgreSQL.

The chain is upper-caser (text → text) → word-vote (a trainable algorithm that learns words exactly as
written). Trained on the dataset's raw lowercase words, word-vote scored 1.0 on its held-out split of
them and then labelled every upper-cased text the pipeline handed it "negative".
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Text, cast, func, select

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.artifact_gc import collect_garbage
from catalog.enums import JobStatus
from catalog.job_output_retention import FED_EXAMPLES_KEY
from executor.jobs import JobService
from executor.runtimes import BwrapRuntime
from infra.artifacts import ArtifactStore
from infra.errors import BadInput
from infra.settings import Settings
from infra.tables import Job, Listing, utcnow
from tests.services import require_service

from .demo_chain import manifest, publish_examples, publish_part, publishing_of, trainable_manifest

TEXT_PARTS = {
    "upper_caser": manifest("upper-caser", "model", {"format": "text@1"}, {"format": "text@1"}),
    "word_vote": trainable_manifest("word-vote", "text@1", "class-label@1"),
}
REVIEWS = [
    {"input": f"{word} {noun}", "target": label}
    for word, label in (
        ("good", "positive"),
        ("great", "positive"),
        ("bad", "negative"),
        ("awful", "negative"),
    )
    for noun in ("film", "plot", "cast")
]


@pytest.fixture
async def app(settings: Settings, encoder) -> AsyncIterator[CatalogApp]:
    require_service("bubblewrap", BwrapRuntime.available(), "bwrap/prlimit/setpriv not installed")
    require_service("bubblewrap", os.geteuid() == 0, "starting sandboxes as other uids needs root")
    catalog = await CatalogApp.open(settings.model_copy(update={"runtime": "bwrap"}), encoder=encoder)
    yield catalog
    await catalog.close()


@pytest.fixture
async def jobs(app: CatalogApp) -> AsyncIterator[JobService]:
    service = JobService(app.settings.model_copy(update={"job_heartbeat_s": 0.2}), app)
    yield service
    await service.queue.close()


async def publish_text_parts(app: CatalogApp, producer: Actor) -> dict[str, str]:
    publishing = publishing_of(app)
    category = {"category": "Natural Language Processing"}
    return {
        part: await publish_part(publishing, producer, part, {**data, **category})
        for part, data in TEXT_PARTS.items()
    }


async def publish_reviews(app: CatalogApp, producer: Actor, name: str, lines: list[dict[str, Any]]) -> str:
    described = {
        "category": "Natural Language Processing",
        "description": "short reviews with their sentiment",
    }
    return await publish_examples(app, producer, name, lines, "text@1", "class-label@1", described)


async def upper_then_vote(app: CatalogApp, requester: Actor, ids: dict[str, str], dataset_id: str) -> str:
    pipeline = await app.pipelines.create(requester, "loud reviews")
    await app.pipelines.add_step(requester, pipeline.id, ids["upper_caser"])
    await app.pipelines.add_step(
        requester, pipeline.id, ids["word_vote"], training_data_listing_id=dataset_id
    )
    return pipeline.id


async def final(jobs: JobService, actor: Actor, job_id: str):
    return [view async for view in jobs.watch(actor, job_id)][-1]


def fed_examples(app: CatalogApp, step_job: Job) -> list[dict[str, Any]]:
    """The examples a step's job was fed, from the blob its row names (never from the row)."""
    assert step_job.inputs["records"] == []
    data = ArtifactStore.from_settings(app.settings).read_bytes(step_job.inputs[FED_EXAMPLES_KEY])
    return [json.loads(line) for line in data.decode().splitlines()]


async def stored_row_size(app: CatalogApp, job_id: str) -> int:
    """What the job's row holds, in bytes: the text of every column, as the database stores it."""
    size = sum(func.coalesce(func.length(cast(column, Text)), 0) for column in Job.__table__.columns)
    async with app.db.session() as session:
        return await session.scalar(select(size).where(Job.id == job_id))


async def train_loud_reviews(
    app: CatalogApp, jobs: JobService, producer: Actor, requester: Actor, reviews: list[dict[str, Any]]
) -> Job:
    """Train word-vote behind upper-caser on ``reviews``; the step's job row once the training is done."""
    ids = await publish_text_parts(app, producer)
    dataset_id = await publish_reviews(app, producer, "many reviews", reviews)
    pipeline_id = await upper_then_vote(app, requester, ids, dataset_id)
    view = await jobs.submit(requester, task="training", pipeline_id=pipeline_id)
    trained = await final(jobs, requester, view.id)
    assert trained.status == JobStatus.SUCCEEDED, trained.error
    [step] = trained.result["trained_steps"]
    async with app.db.session() as session:
        return await session.get(Job, step["job_id"])


async def test_a_step_behind_a_conditioner_trains_on_what_the_conditioner_hands_it(
    app: CatalogApp, jobs: JobService, producer: Actor, requester: Actor
) -> None:
    ids = await publish_text_parts(app, producer)
    unreadable = {"input": "unreadable", "target": "negative"}  # the conditioner fails on it: dropped
    dataset_id = await publish_reviews(app, producer, "reviews", [*REVIEWS, unreadable])
    pipeline_id = await upper_then_vote(app, requester, ids, dataset_id)

    view = await jobs.submit(requester, task="training", pipeline_id=pipeline_id)
    trained = await final(jobs, requester, view.id)
    assert trained.status == JobStatus.SUCCEEDED, trained.error
    [step] = trained.result["trained_steps"]
    assert step["fed_through"] == ["upper-caser"] and step["fed_dropped"] == 1
    # Held out and scored on upper-cased words: the chain up to the step, as the pipeline runs it.
    assert step["accuracy"] == 1.0
    async with app.db.session() as session:
        step_job = await session.get(Job, step["job_id"])
        model = await session.get(Listing, step["model_listing_id"])
    fed = fed_examples(app, step_job)
    assert [r["input"] for r in fed][:2] == ["GOOD FILM", "GOOD PLOT"]
    assert len(fed) == step_job.inputs["fed_examples"] == len(REVIEWS)
    assert step_job.result["fed_through"] == ["upper-caser"]
    assert "trained on reviews fed through upper-caser by job" in model.description

    run = await jobs.submit(
        requester, pipeline_id=trained.result["post_training_pipeline_id"], records=["good day", "awful day"]
    )
    scored = await final(jobs, requester, run.id)
    assert scored.status == JobStatus.SUCCEEDED, scored.error
    outputs = [r["output"]["label"] for r in await jobs.all_outputs(scored)]
    assert outputs == ["positive", "negative"]  # trained on raw words: ["negative", "negative"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [("unreadable", "not a text I can read"), ("crash", "")],  # a record's error; the sandbox failing
)
async def test_a_step_in_front_failing_every_example_fails_the_training_naming_both_and_writes_nothing(
    app: CatalogApp, jobs: JobService, producer: Actor, requester: Actor, text: str, reason: str
) -> None:
    ids = await publish_text_parts(app, producer)
    dataset_id = await publish_reviews(
        app, producer, "bad reviews", [{"input": text, "target": "negative"}] * 6
    )
    pipeline_id = await upper_then_vote(app, requester, ids, dataset_id)

    view = await jobs.submit(requester, task="training", pipeline_id=pipeline_id)
    failed = await final(jobs, requester, view.id)
    assert failed.status == JobStatus.FAILED and failed.result is None
    assert "step 2 'word-vote' could not be fed its training data through the steps before it" in failed.error
    assert "'upper-caser' failed" in failed.error and reason in failed.error, failed.error
    async with app.db.session() as session:
        models = (
            await session.scalars(select(Listing.id).where(Listing.owner_id == requester.account_id))
        ).all()
        step_jobs = (await session.scalars(select(Job.id).where(Job.listing_id == ids["word_vote"]))).all()
    assert models == [] and step_jobs == []  # no half-trained model, no step job
    assert not (await app.pipelines.get(requester, pipeline_id)).is_trained


async def test_feeding_errors_number_the_steps_by_their_place_in_the_pipeline(
    app: CatalogApp, jobs: JobService, producer: Actor, requester: Actor
) -> None:
    """The data enters at step 2 (step 1 reads audio): the fed steps were numbered from 1 within the fed
    steps, and the trained step by training order, so this read "step 1 'word-vote' ...: step 1
    'upper-caser' failed", naming steps 1 twice where the pipeline has them at 3 and 2."""
    ids = await publish_text_parts(app, producer)
    listener = manifest("loud-listener", "model", {"format": "audio@1"}, {"format": "text@1"})
    category = {"category": "Natural Language Processing"}
    listener_id = await publish_part(publishing_of(app), producer, "upper_caser", {**listener, **category})
    dataset_id = await publish_reviews(
        app, producer, "bad reviews", [{"input": "unreadable", "target": "negative"}] * 6
    )
    pipeline = await app.pipelines.create(requester, "heard reviews")
    for listing_id in (listener_id, ids["upper_caser"]):
        await app.pipelines.add_step(requester, pipeline.id, listing_id)
    await app.pipelines.add_step(
        requester, pipeline.id, ids["word_vote"], training_data_listing_id=dataset_id
    )

    view = await jobs.submit(requester, task="training", pipeline_id=pipeline.id)
    failed = await final(jobs, requester, view.id)
    assert failed.status == JobStatus.FAILED, failed.error
    assert failed.error.startswith(
        "step 3 'word-vote' could not be fed its training data through the steps before it: "
        "step 2 'upper-caser' failed for every record"
    ), failed.error


async def test_training_data_with_a_record_without_its_target_is_refused_at_submission(
    app: CatalogApp, jobs: JobService, producer: Actor, requester: Actor
) -> None:
    """The dataset declares its labels, but a record has none: the job was queued and failed in the
    worker. It is refused now, naming the step, and no job exists."""
    ids = await publish_text_parts(app, producer)
    dataset_id = await publish_reviews(app, producer, "half labelled", [*REVIEWS, {"input": "good day"}])
    pipeline_id = await upper_then_vote(app, requester, ids, dataset_id)
    with pytest.raises(
        BadInput, match="the training data of 'word-vote': example 13 must be an object"
    ) as refused:
        await jobs.submit(requester, task="training", pipeline_id=pipeline_id)
    assert "it has no 'target'" in refused.value.message
    step_id = (await app.pipelines.get(requester, pipeline_id)).steps[1].id
    assert refused.value.details == {"field": "pipelineId", "step_id": step_id}
    async with app.db.session() as session:
        assert (await session.scalars(select(Job.id))).all() == []


MANY_REVIEWS = [
    {"input": f"{review['input']} number {n} of a long and rather wordy series", "target": review["target"]}
    for n in range(40)
    for review in REVIEWS
]


async def test_a_fed_steps_job_row_names_its_stored_examples_and_stays_small(
    app: CatalogApp, jobs: JobService, producer: Actor, requester: Actor
) -> None:
    """The fed examples rode on the step job's row (up to the dataset's 256 MiB): here 480 of them made
    a row of some 40 KB. They are stored as an artifact the row names, and the training streams them."""
    step_job = await train_loud_reviews(app, jobs, producer, requester, MANY_REVIEWS)
    fed = fed_examples(app, step_job)
    assert len(fed) == step_job.inputs["fed_examples"] == len(MANY_REVIEWS)
    assert fed[0] == {"input": MANY_REVIEWS[0]["input"].upper(), "target": "positive"}
    assert step_job.result["train_examples"] + step_job.result["holdout"] == len(MANY_REVIEWS)
    assert await stored_row_size(app, step_job.id) < 4096


async def test_the_gc_keeps_a_fed_steps_examples_while_its_job_can_run_and_for_the_retention_after(
    app: CatalogApp, jobs: JobService, producer: Actor, requester: Actor
) -> None:
    """Only the job row names the blob: while the job is queued or running, and for the job output
    retention after it finished, a collection keeps it; past the retention it is swept."""
    step_job = await train_loud_reviews(app, jobs, producer, requester, REVIEWS)
    store = ArtifactStore.from_settings(app.settings)
    blob = store.locate(step_job.inputs[FED_EXAMPLES_KEY]).path
    then = time.time() - 3 * app.settings.gc_grace_s  # well past the grace period
    os.utime(blob, (then, then))

    async def collect_in(status: JobStatus, finished_days_ago: float | None) -> bool:
        async with app.db.session() as session:
            row = await session.get(Job, step_job.id)
            row.status = status.value
            row.finished_at = None if finished_days_ago is None else utcnow() - timedelta(finished_days_ago)
        report = await collect_garbage(app.settings, app.db, delete=True)
        return step_job.inputs[FED_EXAMPLES_KEY] in report.store.garbage_digests

    retention = app.settings.job_output_retention_days
    assert not await collect_in(JobStatus.QUEUED, None)
    assert not await collect_in(JobStatus.RUNNING, None)
    assert not await collect_in(JobStatus.SUCCEEDED, retention - 1)
    assert blob.exists()
    assert await collect_in(JobStatus.SUCCEEDED, retention + 1)
    assert not blob.exists()
