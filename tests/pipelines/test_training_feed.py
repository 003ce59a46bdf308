"""Training a pipeline step on what the steps in front of it hand it: published packages, real bubblewrap
sandboxes, SQLite and PostgreSQL.

The chain is upper-caser (text → text) → word-vote (a trainable algorithm that learns words exactly as
written). Trained on the dataset's raw lowercase words, word-vote scored 1.0 on its held-out split of
them and then labelled every upper-cased text the pipeline handed it "negative".
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.enums import JobStatus
from executor.jobs import JobService
from executor.runtimes import BwrapRuntime
from infra.errors import BadInput
from infra.settings import Settings
from infra.tables import Job, Listing
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
    assert [r["input"] for r in step_job.inputs["records"]][:2] == ["GOOD FILM", "GOOD PLOT"]
    assert len(step_job.inputs["records"]) == len(REVIEWS)
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
    assert "step 1 'word-vote' could not be fed its training data through the steps before it" in failed.error
    assert "'upper-caser' failed" in failed.error and reason in failed.error, failed.error
    async with app.db.session() as session:
        models = (
            await session.scalars(select(Listing.id).where(Listing.owner_id == requester.account_id))
        ).all()
        step_jobs = (await session.scalars(select(Job.id).where(Job.listing_id == ids["word_vote"]))).all()
    assert models == [] and step_jobs == []  # no half-trained model, no step job
    assert not (await app.pipelines.get(requester, pipeline_id)).is_trained


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
