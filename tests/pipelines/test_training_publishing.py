"""Pre-training → post-training pipelines, and publishing a runnable pipeline as a listing."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.pipelines import ConnectionStatus, PipelineService
from catalog.pipelines.publishing import publish_pipeline
from catalog.pipelines.training import PipelineTraining, TrainingTask
from infra.db import Database
from infra.errors import BadInput, Conflict
from infra.tables import Job, Listing

from .conftest import add_code_version, labelled_crops

MakeListing = Callable[..., Awaitable[Listing]]


async def test_training_needs_data_then_yields_a_runnable_post_training_pipeline(
    service: PipelineService,
    catalog: CatalogApp,
    requester: Actor,
    stranger: Actor,
    make_listing: MakeListing,
    pre_training: tuple[str, Listing],
) -> None:
    pipeline_id, trainer = pre_training
    training = PipelineTraining(service)
    with pytest.raises(BadInput, match="choose training data for 'crop-classifier-trainer'"):
        await training.plan(requester, pipeline_id)
    crops = await labelled_crops(make_listing)
    step_id = (await service.get(requester, pipeline_id)).steps[2].id
    await service.set_training_data(requester, pipeline_id, step_id, crops.id)
    (task,) = await training.plan(requester, pipeline_id)
    assert (task.step_id, task.algorithm_listing_id, task.dataset_listing_id) == (
        step_id,
        trainer.id,
        crops.id,
    )
    assert (task.resources, task.resource_class) == ({"cpu": 2, "memory_mb": 4096}, "cpu")

    trained: list[TrainingTask] = []

    async def train_step(task: TrainingTask) -> str:
        # Stands for the executor's training job: its product is a private model of the requester,
        # published with code to run (the algorithm's program and what it learned).
        trained.append(task)
        model = await make_listing(
            "crop-classifier (trained)",
            owner=requester,
            package="classifier",
            visibility="private",
            input_format="image-crops",
            output_format="predictions",
        )
        return model.id

    post = await training.train(requester, pipeline_id, train_step)
    assert trained == [task]
    assert post.id != pipeline_id and post.name == "street scenes (trained)"
    assert [s.listing_name for s in post.steps] == [
        "street-object-detector",
        "boxes-to-crops",
        "crop-classifier (trained)",
    ]
    assert all(s.kind != "algorithm" or not s.needs_training for s in post.steps) and post.is_runnable
    assert [c.status for c in post.connections] == [ConnectionStatus.CONDITIONED]
    original = await service.get(requester, pipeline_id)
    assert original.is_runnable and original.steps[2].trained_listing_id == post.steps[2].listing_id
    plan = await service.plan_run(requester, pipeline_id)
    assert plan.steps[2].listing_name == "crop-classifier (trained)"

    # Published for everyone, it could not run for anyone else (its trained model is private): refused,
    # naming the step. Published privately it is accepted, and it cannot be opened up later either.
    unreachable = (
        "visibility: step 3 'crop-classifier-trainer' runs its trained model 'crop-classifier (trained)', "
        "which is private, so nobody this public pipeline listing reaches could run it"
    )
    with pytest.raises(BadInput, match=re.escape(unreachable)) as refused:
        await publish_pipeline(service, catalog.listings, requester, pipeline_id, category="Vision")
    assert refused.value.code == "BAD_INPUT" and refused.value.details == {"field": "visibility"}
    listing = await publish_pipeline(
        service, catalog.listings, requester, pipeline_id, category="Vision", visibility="private"
    )
    with pytest.raises(BadInput, match=re.escape(unreachable)):
        await catalog.listings.update(requester, listing.id, {"visibility": "public"})
    with pytest.raises(BadInput, match="which is private, so nobody this shared pipeline listing reaches"):
        await catalog.listings.update(
            requester, listing.id, {"visibility": "shared", "shared_with": [stranger.name]}
        )
    # Once the model reaches the same accounts, so may the pipeline.
    model_id = post.steps[2].listing_id
    await catalog.listings.update(
        requester, model_id, {"visibility": "shared", "shared_with": [stranger.name]}
    )
    await catalog.listings.update(
        requester, listing.id, {"visibility": "shared", "shared_with": [stranger.name]}
    )
    assert [s.listing_name for s in (await service.plan_listing_run(stranger, listing.id)).steps][-1] == (
        "crop-classifier (trained)"
    )
    with pytest.raises(
        BadInput, match="runs its trained model 'crop-classifier \\(trained\\)', which is shared"
    ):
        await catalog.listings.update(requester, listing.id, {"visibility": "public"})
    await catalog.listings.update(requester, model_id, {"visibility": "public"})
    await catalog.listings.update(requester, listing.id, {"visibility": "public"})

    # A model made private again after that stops the runs of others, who are told why without its id.
    await catalog.listings.update(requester, model_id, {"visibility": "private"})
    with pytest.raises(BadInput, match="the model trained for step 3 is not available to you") as refused:
        await service.plan_listing_run(stranger, listing.id)
    assert model_id not in str(refused.value)


async def test_a_pipeline_running_a_model_that_must_stay_private_can_only_be_private(
    service: PipelineService,
    catalog: CatalogApp,
    requester: Actor,
    make_listing: MakeListing,
    db: Database,
    pre_training: tuple[str, Listing],
) -> None:
    """``catalog.provenance``: a model trained from another producer's algorithm is as shareable as that
    producer allows. A pipeline running one must say so, not suggest making the model public."""
    pipeline_id, _ = pre_training
    crops = await labelled_crops(make_listing)
    step_id = (await service.get(requester, pipeline_id)).steps[2].id
    await service.set_training_data(requester, pipeline_id, step_id, crops.id)

    async def train_step(task: TrainingTask) -> str:
        model = await make_listing(
            "crop-classifier (trained)",
            owner=requester,
            visibility="private",
            input_format="image-crops",
            output_format="predictions",
        )
        await add_code_version(
            db, model.id, "classifier", redistribution="private", trained_from="crop-classifier-trainer 1.0.0"
        )
        return model.id

    await PipelineTraining(service).train(requester, pipeline_id, train_step)
    with pytest.raises(BadInput, match="so a pipeline that runs it can only be private") as refused:
        await publish_pipeline(service, catalog.listings, requester, pipeline_id, category="Vision")
    assert "step 3 'crop-classifier-trainer' runs its trained model" in refused.value.message
    assert "(crop-classifier-trainer 1.0.0)" in refused.value.message
    listing = await publish_pipeline(
        service, catalog.listings, requester, pipeline_id, category="Vision", visibility="private"
    )
    assert listing.visibility == "private"


async def test_a_step_made_private_later_is_neither_trained_nor_named(
    service: PipelineService,
    requester: Actor,
    make_listing: MakeListing,
    db: Database,
    pre_training: tuple[str, Listing],
) -> None:
    pipeline_id, trainer = pre_training
    crops = await labelled_crops(make_listing)
    step_id = (await service.get(requester, pipeline_id)).steps[2].id
    await service.set_training_data(requester, pipeline_id, step_id, crops.id)
    async with db.session() as session:
        (await session.get(Listing, trainer.id)).visibility = "private"

    training = PipelineTraining(service)
    for attempt in (training.plan, training.derive_post_training):
        with pytest.raises(BadInput, match="the listing of step 3 is no longer available") as refused:
            await attempt(requester, pipeline_id)
        assert "crop-classifier-trainer" not in str(refused.value)


async def test_a_trained_model_must_keep_the_algorithms_formats(
    service: PipelineService, requester: Actor, make_listing: MakeListing, pre_training: tuple[str, Listing]
) -> None:
    pipeline_id, _ = pre_training
    step_id = (await service.get(requester, pipeline_id)).steps[2].id
    wrong = await make_listing(
        "text-model", owner=requester, input_format="text", output_format="predictions"
    )
    with pytest.raises(
        BadInput,
        match="'crop-classifier-trainer': input: format image-crops@1 does not match text@1",
    ):
        await PipelineTraining(service).attach(requester, pipeline_id, step_id, wrong.id)
    with pytest.raises(BadInput, match="steps still to train: 'crop-classifier-trainer'"):
        await PipelineTraining(service).derive_post_training(requester, pipeline_id)


async def test_publish_a_runnable_pipeline_as_a_listing(
    service: PipelineService,
    catalog: CatalogApp,
    requester: Actor,
    stranger: Actor,
    vision: dict[str, Listing],
    db: Database,
    pre_training: tuple[str, Listing],
) -> None:
    pipeline = await service.create(requester, "street scenes")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    await service.add_step(requester, pipeline.id, vision["classifier"].id)
    async with db.session() as session:
        for latency, status in (
            (120.0, "succeeded"),
            (80.0, "succeeded"),
            (5.0, "failed"),
            (100.0, "succeeded"),
        ):
            session.add(
                Job(
                    owner_id=requester.account_id,
                    pipeline_id=pipeline.id,
                    task="inference",
                    status=status,
                    metrics={"latency_ms": latency},
                )
            )

    listing = await publish_pipeline(
        service, catalog.listings, requester, pipeline.id, category="Computer Vision"
    )
    assert (listing.kind, listing.name, listing.category) == ("pipeline", "street scenes", "Computer Vision")
    assert (listing.input_format, listing.output_format) == ("image@1", "predictions@1")
    assert listing.resources == {"cpu": 2, "memory_mb": 2048, "gpu": 1}
    assert listing.latency_p50_ms == 100.0 and listing.accuracy is None
    # What anyone who sees the listing reads names none of its steps (one may be another's private model).
    published = repr(await catalog.listings.get(stranger, listing.id))
    assert pipeline.id not in published
    assert not [part for part in vision.values() if part.id in published]
    assert (await service.get(requester, pipeline.id)).listing_id == listing.id
    assert (await catalog.listings.get(requester, listing.id)).id == listing.id

    with pytest.raises(Conflict, match="delete that listing first"):
        await service.delete(requester, pipeline.id)
    with pytest.raises(Conflict, match="already published"):
        await publish_pipeline(service, catalog.listings, requester, pipeline.id)
    with pytest.raises(BadInput, match="would make pipeline 'street scenes' contain itself"):
        await service.add_step(requester, pipeline.id, listing.id)

    # Reused as one step of another pipeline, it runs as its own steps.
    outer = await service.create(requester, "reuse")
    await service.add_step(requester, outer.id, listing.id)
    plan = await service.plan_run(requester, outer.id)
    assert [s.listing_name for s in plan.steps] == [
        "street-object-detector",
        "boxes-to-crops",
        "crop-classifier",
    ]

    # Anyone who sees the listing can run it; the plan is the stored chain's.
    shared = await service.plan_listing_run(stranger, listing.id)
    assert [s.listing_name for s in shared.steps] == [s.listing_name for s in plan.steps]
    with pytest.raises(BadInput, match="'crop-classifier' is a model, not a pipeline"):
        await service.plan_listing_run(stranger, vision["classifier"].id)

    # Once its listing is gone, the pipeline may go too.
    await catalog.listings.delete(requester, listing.id)
    await service.delete(requester, outer.id)
    await service.delete(requester, pipeline.id)

    unrunnable_id, _ = pre_training
    with pytest.raises(
        BadInput, match="only a runnable pipeline can be published: 'crop-classifier-trainer'"
    ):
        await publish_pipeline(service, catalog.listings, requester, unrunnable_id)


async def test_a_published_pipeline_that_cannot_run_does_not_name_its_private_pipeline(
    service: PipelineService,
    catalog: CatalogApp,
    requester: Actor,
    stranger: Actor,
    db: Database,
    vision: dict[str, Listing],
) -> None:
    """The stored pipeline behind a listing stays private, its name included: a stranger whose run is
    refused (a step's listing made private later) is told the listing's name, never the pipeline's."""
    pipeline = await service.create(requester, "codename falcon")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    await service.add_step(requester, pipeline.id, vision["classifier"].id)
    listing = await publish_pipeline(
        service, catalog.listings, requester, pipeline.id, name="street scenes", category="Vision"
    )
    async with db.session() as session:
        (await session.get(Listing, vision["classifier"].id)).visibility = "private"
    with pytest.raises(BadInput, match="step 3 is no longer available to you") as refused:
        await service.plan_listing_run(stranger, listing.id)
    assert "codename falcon" not in refused.value.message
    # Nor told to "remove that step" of a pipeline that is not theirs: the advice is for its owner.
    assert "remove that step" not in refused.value.message and "its owner removes" in refused.value.message
    assert "'street scenes'" in refused.value.message

    # Used as a step of the stranger's own pipeline, it makes that pipeline not runnable, and says why
    # (isRunnable said true while runJob refused: the nested chain was not judged).
    own = await service.create(stranger, "my street scenes")
    view = (await service.add_step(stranger, own.id, listing.id)).pipeline
    reason = view.steps[0].not_runnable_reason
    assert not view.is_runnable and reason is not None
    assert reason.startswith("step 1: pipeline listing 'street scenes' cannot run (")
    assert "the listing of step 3 is no longer available to you" in reason
    assert "codename falcon" not in reason
    with pytest.raises(BadInput, match="pipeline listing 'street scenes' cannot run"):
        await service.plan_run(stranger, own.id)


async def test_steps_train_in_chain_order_each_fed_through_the_trained_steps_in_front(
    service: PipelineService, requester: Actor, make_listing: MakeListing
) -> None:
    """normaliser (trainable, text → text) → voter (trainable, text → class-label), both fed text: the
    voter learns from what the normaliser's model hands it, so training the normaliser again (new data)
    trains the voter again; before, the voter kept the model it learnt from the old normaliser."""

    async def trainable(name: str, output_format: str) -> Listing:
        return await make_listing(
            name,
            kind="algorithm",
            input_format="text",
            output_format=output_format,
            training_resources={"cpu": 1, "memory_mb": 256},
        )

    normaliser, voter = await trainable("normaliser", "text"), await trainable("voter", "class-label")
    pairs = await make_listing("pairs", kind="dataset", input_format="text", output_format="text")
    reviews = await make_listing("reviews", kind="dataset", input_format="text", output_format="class-label")
    pipeline = await service.create(requester, "two to train")
    first = (
        await service.add_step(requester, pipeline.id, normaliser.id, training_data_listing_id=pairs.id)
    ).step_id
    second = (
        await service.add_step(requester, pipeline.id, voter.id, training_data_listing_id=reviews.id)
    ).step_id
    training = PipelineTraining(service)

    planned = await training.plan(requester, pipeline.id)
    assert [t.step_id for t in planned] == [first, second]  # chain order
    assert await training.feed_plan(requester, planned[0]) is None  # the data enters at the first step
    models = {}
    for task, out in zip(planned, ("text", "class-label"), strict=True):
        models[task.step_id] = await make_listing(
            f"{task.algorithm_name} (trained)",
            owner=requester,
            package="classifier",
            visibility="private",
            input_format="text",
            output_format=out,
        )
        await training.attach(requester, pipeline.id, task.step_id, models[task.step_id].id)
    feed = await training.feed_plan(requester, planned[1])
    assert feed is not None and [s.listing_id for s in feed.steps] == [models[first].id]
    assert await training.plan(requester, pipeline.id) == []

    await service.set_training_data(requester, pipeline.id, first, pairs.id)  # drops the normaliser's model
    assert [t.step_id for t in await training.plan(requester, pipeline.id)] == [first, second]
    with pytest.raises(BadInput, match="learns from what 'normaliser' hand"):
        await training.feed_plan(requester, planned[1])  # the step in front must be trained first
