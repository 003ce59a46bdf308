"""A published pipeline stays runnable for those its listing reaches: changes of its steps that would
leave one out of their reach are refused (``audience.keep_published_reachable``), and what its steps'
owners do later (a listing made private, a trained model deleted) is told truthfully."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.pipelines import PipelineService
from catalog.pipelines.publishing import publish_pipeline
from catalog.pipelines.training import PipelineTraining, TrainingTask
from infra.errors import BadInput
from infra.tables import Listing

from .conftest import BOXES_WITH_IMAGE, labelled_crops

MakeListing = Callable[..., Awaitable[Listing]]
PUBLISHED = "so nobody the public listing 'street scenes' published from this pipeline reaches could run it"


async def _published(
    service: PipelineService, catalog: CatalogApp, requester: Actor, steps: list[Listing]
) -> tuple[str, Listing]:
    pipeline = await service.create(requester, "codename falcon")
    for listing in steps:
        await service.add_step(requester, pipeline.id, listing.id)
    listing = await publish_pipeline(
        service, catalog.listings, requester, pipeline.id, name="street scenes", category="Vision"
    )
    return pipeline.id, listing


async def refused_going_public(catalog: CatalogApp, owner: Actor, listing_id: str, message: str) -> None:
    """Making the pipeline's listing public (again) is BAD_INPUT saying exactly ``message``."""
    with pytest.raises(BadInput, match=re.escape(message)):
        await catalog.listings.update(owner, listing_id, {"visibility": "public"})


async def test_a_step_added_to_a_public_pipeline_listing_must_reach_its_audience(
    service: PipelineService,
    catalog: CatalogApp,
    requester: Actor,
    stranger: Actor,
    make_listing: MakeListing,
    vision: dict[str, Listing],
) -> None:
    pipeline_id, listing = await _published(
        service, catalog, requester, [vision["detector"], vision["classifier"]]
    )
    mine = await make_listing(
        "my-calibrator",
        owner=requester,
        package="classifier",
        visibility="private",
        input_format="predictions@1",
        output_format="predictions@1",
    )
    refused_text = (
        f"step 4 'my-calibrator' is private, {PUBLISHED}; make 'my-calibrator' public first "
        "(or share it with the same accounts), or make 'street scenes' private first (updateListing)"
    )
    with pytest.raises(BadInput, match=re.escape(refused_text)) as refused:
        await service.add_step(requester, pipeline_id, mine.id)
    assert refused.value.code == "BAD_INPUT" and refused.value.message.startswith("step 4")
    # Nothing of the change stays: the listing still runs its three steps for others.
    assert len((await service.get(requester, pipeline_id)).steps) == 3
    assert len((await service.plan_listing_run(stranger, listing.id)).steps) == 3

    await catalog.listings.update(requester, mine.id, {"visibility": "public"})
    view = (await service.add_step(requester, pipeline_id, mine.id)).pipeline
    assert [s.listing_name for s in view.steps][-1] == "my-calibrator" and view.listing_problem is None
    assert len((await service.plan_listing_run(stranger, listing.id)).steps) == 4


async def test_removing_a_step_must_not_reconnect_through_a_private_conditioner(
    service: PipelineService,
    catalog: CatalogApp,
    producer: Actor,
    requester: Actor,
    stranger: Actor,
    make_listing: MakeListing,
    vision: dict[str, Listing],
) -> None:
    """Its owner withdraws the middle step; removing it reconnects the chain through the only conditioner
    left, the publisher's private one: refused, and once that is public, accepted."""
    pipeline_id, listing = await _published(
        service, catalog, requester, [vision["detector"], vision["cropper"], vision["classifier"]]
    )
    mine = await make_listing(
        "my-cropper",
        kind="algorithm",
        owner=requester,
        package="cropper",
        visibility="private",
        input_format="bounding-boxes@1",
        input_schema=BOXES_WITH_IMAGE,
        output_format="image-crops@1",
    )
    await catalog.listings.update(producer, vision["cropper"].id, {"visibility": "private"})
    view = await service.get(requester, pipeline_id)
    middle = view.steps[1].id
    # Its owner sees the listing's audience lose that step, without the withdrawn listing's name.
    assert view.listing_problem == (
        f"step 2 is private, {PUBLISHED}; its owner is another account: remove or replace that step, "
        "or make 'street scenes' private first (updateListing)"
    )
    with pytest.raises(BadInput, match=re.escape(f"step 2 'my-cropper' is private, {PUBLISHED}")):
        await service.remove_step(requester, pipeline_id, middle)
    assert [s.id for s in (await service.get(requester, pipeline_id)).steps][1] == middle

    await catalog.listings.update(requester, mine.id, {"visibility": "public"})
    # Another step withdrawn too does not block that removal: a change is judged by what it touches,
    # else withdrawn steps could only be removed all at once.
    await catalog.listings.update(producer, vision["classifier"].id, {"visibility": "private"})
    view = (await service.remove_step(requester, pipeline_id, middle)).pipeline
    assert [s.listing_name for s in view.steps][1] == "my-cropper"
    assert view.listing_problem is not None and view.listing_problem.startswith("step 3 is private")
    await catalog.listings.update(producer, vision["classifier"].id, {"visibility": "public"})
    assert (await service.get(requester, pipeline_id)).listing_problem is None
    assert [s.listing_name for s in (await service.plan_listing_run(stranger, listing.id)).steps][1] == (
        "my-cropper"
    )


async def test_a_published_pipeline_is_not_retrained_out_of_its_audiences_reach(
    service: PipelineService,
    catalog: CatalogApp,
    producer: Actor,
    requester: Actor,
    stranger: Actor,
    make_listing: MakeListing,
    pre_training: tuple[str, Listing],
) -> None:
    pipeline_id, trainer = pre_training
    training = PipelineTraining(service)
    crops = await labelled_crops(make_listing)
    more_crops = await labelled_crops(make_listing, "more-labelled-crops")
    step_id = (await service.get(requester, pipeline_id)).steps[2].id
    await service.set_training_data(requester, pipeline_id, step_id, crops.id)
    models: list[str] = []

    async def train_step(task: TrainingTask) -> str:
        # Stands for the executor's training job, whose product is a private model of the requester.
        model = await make_listing(
            f"crop-classifier v{len(models) + 1}",
            owner=requester,
            package="classifier",
            visibility="private",
            input_format="image-crops",
            output_format="predictions",
        )
        models.append(model.id)
        return model.id

    await training.train(requester, pipeline_id, train_step)
    await catalog.listings.update(requester, models[0], {"visibility": "public"})
    listing = await publish_pipeline(
        service, catalog.listings, requester, pipeline_id, name="street scenes", category="Vision"
    )

    # New training data would drop the trained model, and its replacement would be private: refused
    # before any training job runs, with the way to do it.
    untrained = (
        f"step 3 'crop-classifier-trainer': it is not trained, {PUBLISHED}; training leaves "
        "the model it produces private: train it while the listing is private, then make the new model public"
    )
    with pytest.raises(BadInput, match=re.escape(untrained)):
        await service.set_training_data(requester, pipeline_id, step_id, more_crops.id)
    assert (await service.get(requester, pipeline_id)).steps[2].trained_listing_id == models[0]
    # Nor is a private model attached to the published step.
    private = await make_listing(
        "crop-classifier retrained",
        owner=requester,
        package="classifier",
        visibility="private",
        input_format="image-crops",
        output_format="predictions",
    )
    attached = "step 3 'crop-classifier-trainer' runs its trained model 'crop-classifier retrained', which"
    with pytest.raises(BadInput, match=re.escape(attached)):
        await training.attach(requester, pipeline_id, step_id, private.id)
    assert (await service.get(requester, pipeline_id)).steps[2].trained_listing_id == models[0]

    # The model made private by its owner: the owner may still run the pipeline, its audience may not.
    await catalog.listings.update(requester, models[0], {"visibility": "private"})
    view = await service.get(requester, pipeline_id)
    assert view.is_runnable and view.listing_problem == (
        f"step 3 'crop-classifier-trainer' runs its trained model 'crop-classifier v1', which is private, "
        f"{PUBLISHED}; make 'crop-classifier v1' public first (or share it with the same accounts), "
        "or make 'street scenes' private first (updateListing)"
    )

    # The model deleted: the step says so (it read "not available to you"), to owner and stranger alike.
    await catalog.listings.delete(requester, models[0])
    deleted = (
        "the model trained for step 3 was deleted; the pipeline runs again once its owner trains that "
        "step again (train the pipeline)"
    )
    view = await service.get(requester, pipeline_id)
    assert not view.is_runnable and view.steps[2].not_runnable_reason == deleted
    assert view.listing_problem is not None and "its trained model was deleted" in view.listing_problem
    with pytest.raises(BadInput, match=re.escape(deleted)):
        await service.plan_listing_run(stranger, listing.id)
    with pytest.raises(BadInput, match="steps still to train: 'crop-classifier-trainer'"):
        await training.derive_post_training(requester, pipeline_id)
    # Retraining it is refused while the listing is public (its new model would be private) ...
    gone = "step 3 'crop-classifier-trainer': its trained model was deleted"
    with pytest.raises(BadInput, match=re.escape(gone)):
        await training.plan(requester, pipeline_id)
    # ... and, once it is private, retrains the step (a deleted model no longer counts as trained).
    await catalog.listings.update(requester, listing.id, {"visibility": "private"})
    (task,) = await training.plan(requester, pipeline_id)
    assert task.step_id == step_id
    await training.train(requester, pipeline_id, train_step)
    await catalog.listings.update(requester, models[-1], {"visibility": "public"})
    await catalog.listings.update(requester, listing.id, {"visibility": "public"})
    plan = await service.plan_listing_run(stranger, listing.id)
    assert plan.steps[-1].listing_id == models[-1]

    # The algorithm withdrawn by its producer: a run checks the step's listing too, so does the audience
    # rule (it looked at the trained model only), without naming what the publisher may no longer see.
    await catalog.listings.update(producer, trainer.id, {"visibility": "private"})
    with pytest.raises(BadInput, match="the listing of step 3 is no longer available to you"):
        await service.plan_listing_run(stranger, listing.id)
    problem = (await service.get(requester, pipeline_id)).listing_problem
    assert problem is not None and problem.startswith(f"step 3 is private, {PUBLISHED}; its owner is")


async def test_removing_the_conditioner_of_a_published_chain_is_refused(
    service: PipelineService,
    catalog: CatalogApp,
    requester: Actor,
    stranger: Actor,
    vision: dict[str, Listing],
) -> None:
    """Before, the removal went through: the listing's connection stayed open and every stranger's run of
    it was refused from then on, while its publisher was told nothing."""
    pipeline_id, listing = await _published(
        service, catalog, requester, [vision["detector"], vision["classifier"]]
    )
    conditioner = (await service.get(requester, pipeline_id)).steps[1]
    assert conditioner.listing_name == "boxes-to-crops"
    refused_text = (
        "step 1 'street-object-detector' → step 2 'crop-classifier' would no longer fit, and the public "
        "listing 'street scenes' published from this pipeline runs this chain for others: "
        "'street-object-detector' emits bounding-boxes@1 but 'crop-classifier' needs image-crops@1; add one "
        "of the proposed conditioning steps; keep one of them between the two steps ('boxes-to-crops': "
        "addPipelineStep after step 1), or make 'street scenes' private first (updateListing)"
    )
    with pytest.raises(BadInput, match=re.escape(refused_text)) as refused:
        await service.remove_step(requester, pipeline_id, conditioner.id)
    assert refused.value.code == "BAD_INPUT"
    assert [s.id for s in (await service.get(requester, pipeline_id)).steps][1] == conditioner.id
    assert len((await service.plan_listing_run(stranger, listing.id)).steps) == 3

    # Without its audience to keep, the pipeline is its owner's to take apart, but not to publish so.
    await catalog.listings.update(requester, listing.id, {"visibility": "private"})
    change = await service.remove_step(requester, pipeline_id, conditioner.id)
    assert [c.status for c in change.opened] == ["open"]
    widened = (
        "step 1 'street-object-detector' → step 2 'crop-classifier' does not fit (format bounding-boxes@1 "
        "does not match image-crops@1), so this public pipeline listing would not run for others: bridge "
        "them in the pipeline first, or keep the listing private"
    )
    await refused_going_public(catalog, requester, listing.id, widened)


async def test_a_published_chain_keeps_the_ends_its_listing_declares(
    service: PipelineService,
    catalog: CatalogApp,
    requester: Actor,
    stranger: Actor,
    make_listing: MakeListing,
    vision: dict[str, Listing],
) -> None:
    """The listing says it takes image@1 and answers predictions@1; a step added at either end that
    reads or emits something else would hand its users records they never asked for."""
    pipeline_id, listing = await _published(
        service, catalog, requester, [vision["detector"], vision["classifier"]]
    )
    picker = await make_listing(
        "label-picker", package="classifier", input_format="predictions@1", output_format="class-label@1"
    )
    framer = await make_listing(
        "frame-grabber", package="detector", input_format="video@1", output_format="image@1"
    )
    last = (
        "step 4 'label-picker' would come last, but the public listing 'street scenes' published from this "
        "pipeline answers predictions@1 and it does not emit that: format class-label@1 does not match "
        "predictions@1; keep a last step that emits predictions@1, or make 'street scenes' private first "
        "(updateListing)"
    )
    with pytest.raises(BadInput, match=re.escape(last)):
        await service.add_step(requester, pipeline_id, picker.id)
    first = (
        "step 1 'frame-grabber' would come first, but the public listing 'street scenes' published from "
        "this pipeline takes image@1 and it does not read that: format image@1 does not match video@1; "
        "keep a first step that reads image@1"
    )
    with pytest.raises(BadInput, match=re.escape(first)):
        await service.add_step(requester, pipeline_id, framer.id, at_start=True)
    assert [s.listing_name for s in (await service.plan_listing_run(stranger, listing.id)).steps] == [
        "street-object-detector",
        "boxes-to-crops",
        "crop-classifier",
    ]

    # Reworked while private, it goes back out once the listing declares what the chain now answers.
    await catalog.listings.update(requester, listing.id, {"visibility": "private"})
    await service.add_step(requester, pipeline_id, picker.id)
    stale = (
        "step 4 'label-picker' would come last, but this public pipeline listing answers predictions@1 and "
        "it does not emit that: format class-label@1 does not match predictions@1; keep a last step that "
        "emits predictions@1, or keep the listing private"
    )
    await refused_going_public(catalog, requester, listing.id, stale)
    await catalog.listings.update(
        requester, listing.id, {"visibility": "public", "output_format": "class-label@1"}
    )
    assert [s.listing_name for s in (await service.plan_listing_run(stranger, listing.id)).steps][-1] == (
        "label-picker"
    )
