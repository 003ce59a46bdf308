"""Building pipelines against real listings: fits, conditioning, open gaps, access and cycles."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import select

from catalog.actors import ANONYMOUS, Actor
from catalog.demand import DemandService
from catalog.pipelines import ConnectionStatus, PipelineService, StepRole
from infra.db import Database
from infra.errors import BadInput, NotFound, Unauthenticated
from infra.tables import Listing, Pipeline, SearchEvent

from .conftest import crop_trainer, labelled_crops

MakeListing = Callable[..., Awaitable[Listing]]


async def gap_events(db: Database) -> list[SearchEvent]:
    async with db.session() as session:
        return list((await session.execute(select(SearchEvent))).scalars().all())


async def test_compatible_chain_connects_directly(
    service: PipelineService, requester: Actor, make_listing: MakeListing
) -> None:
    tokenizer = await make_listing("wordpiece", kind="algorithm", input_format="text", output_format="tokens")
    sentiment = await make_listing("token-sentiment", input_format="tokens@1", output_format="class-label")
    pipeline = await service.create(requester, "reviews")
    first = await service.add_step(requester, pipeline.id, tokenizer.id)
    change = await service.add_step(requester, pipeline.id, sentiment.id, after=first.step_id)

    view = change.pipeline
    assert [s.listing_id for s in view.steps] == [tokenizer.id, sentiment.id]
    assert [c.status for c in view.connections] == [ConnectionStatus.OK]
    assert change.inserted_conditioning_step_ids == () and change.opened == ()
    assert (view.input_format, view.output_format) == ("text@1", "class-label@1")
    # Complete, but both are catalog entries (no published code): runJob would refuse it, so it is
    # not runnable (``test_is_runnable_says_what_run_job_will_do``).
    assert view.is_complete and not view.is_runnable
    assert await service.get(requester, pipeline.id) == view


async def test_is_runnable_says_what_run_job_will_do(
    service: PipelineService, requester: Actor, make_listing: MakeListing, vision: dict[str, Listing]
) -> None:
    """A step on a catalog entry (createListing, the demo catalog, an import) has nothing to run: isRunnable
    said true while runJob refused the pipeline. Both now read one rule, and the step says why."""
    described = await make_listing(
        "described-classifier", input_format="image-crops@1", output_format="predictions@1"
    )
    pipeline = await service.create(requester, "street scenes")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    change = await service.add_step(requester, pipeline.id, described.id)
    view = change.pipeline
    assert view.is_complete and view.is_trained and not view.is_runnable
    reason = "step 3 'described-classifier' cannot be run: it has no published code (a catalog entry only)"
    assert [s.not_runnable_reason for s in view.steps] == [None, None, reason]
    assert [s.runnable for s in view.steps] == [True, True, False]
    with pytest.raises(BadInput, match=reason.replace("(", r"\(").replace(")", r"\)")):
        await service.plan_run(requester, pipeline.id)

    coded = await service.create(requester, "street scenes, published code")  # every step has code
    await service.add_step(requester, coded.id, vision["detector"].id)
    view = (await service.add_step(requester, coded.id, vision["classifier"].id)).pipeline
    assert view.is_runnable and [s.not_runnable_reason for s in view.steps] == [None, None, None]
    plan = await service.plan_run(requester, coded.id)
    assert [s.listing_name for s in plan.steps][-1] == "crop-classifier"


async def test_mismatch_is_bridged_by_the_best_conditioner(
    service: PipelineService,
    requester: Actor,
    make_listing: MakeListing,
    vision: dict[str, Listing],
    db: Database,
) -> None:
    slower = await make_listing(
        "unverified-cropper",
        kind="model",
        input_format="bounding-boxes",
        input_schema=None,
        output_format="image-crops",
        latency_p50_ms=900.0,
    )
    pipeline = await service.create(requester, "street scenes")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    change = await service.add_step(requester, pipeline.id, vision["classifier"].id)

    view = change.pipeline
    assert [s.listing_name for s in view.steps] == [
        "street-object-detector",
        "boxes-to-crops",
        "crop-classifier",
    ]
    assert [s.role for s in view.steps] == [StepRole.STEP, StepRole.CONDITIONING, StepRole.STEP]
    assert [s.position for s in view.steps] == [0, 1, 2]
    (connection,) = view.connections
    assert connection.status == ConnectionStatus.CONDITIONED
    assert connection.conditioning_step_ids == change.inserted_conditioning_step_ids == (view.steps[1].id,)
    assert "boxes-to-crops" in connection.reason
    assert [a.listing_id for a in connection.alternatives] == [slower.id]
    assert view.is_complete and await gap_events(db) == []


async def test_schema_mismatch_within_a_format_is_not_bridged_by_an_unfit_conditioner(
    service: PipelineService,
    requester: Actor,
    make_listing: MakeListing,
    vision: dict[str, Listing],
    db: Database,
) -> None:
    # Emits boxes without the image: the cropper (which needs the image) cannot follow it.
    bare = await make_listing("bare-detector", input_format="image", output_format="bounding-boxes")
    pipeline = await service.create(requester, "bare")
    await service.add_step(requester, pipeline.id, bare.id)
    change = await service.add_step(requester, pipeline.id, vision["classifier"].id)

    (connection,) = change.opened
    assert connection.status == ConnectionStatus.OPEN
    assert "bounding-boxes@1" in connection.reason and "image-crops@1" in connection.reason
    assert len(change.pipeline.steps) == 2 and not change.pipeline.is_complete


async def test_no_conditioner_leaves_an_open_gap_logged_once_as_unmet_demand(
    service: PipelineService, requester: Actor, make_listing: MakeListing, db: Database
) -> None:
    speech = await make_listing(
        "speech-to-text", input_format="audio", output_format="text", category="Audio"
    )
    detector = await make_listing("detector", input_format="image", output_format="bounding-boxes")
    pipeline = await service.create(requester, "impossible")
    await service.add_step(requester, pipeline.id, speech.id)
    change = await service.add_step(requester, pipeline.id, detector.id)

    (gap,) = change.opened
    assert gap.from_step_id == change.pipeline.steps[0].id and gap.to_step_id == change.step_id
    assert gap.reason == (
        "'speech-to-text' emits text@1 but 'detector' needs image@1; "
        "no visible runnable algorithm or model converts text@1 to image@1"
    )
    (event,) = await gap_events(db)
    assert event.account_id == requester.account_id and event.result_count == 0
    assert event.text == "convert text to image" and event.category == "Computer Vision"
    assert event.facets == {"source": "pipeline_gap", "input_format": "text@1", "output_format": "image@1"}

    # Reading the pipeline again, or changing another part of it, does not log the same gap twice.
    await service.get(requester, pipeline.id)
    tts = await make_listing("text-to-speech", input_format="text", output_format="audio")
    await service.add_step(requester, pipeline.id, tts.id, at_start=True)
    assert len(await gap_events(db)) == 1


async def test_a_gap_closes_when_a_conditioner_is_added_by_hand(
    service: PipelineService, requester: Actor, make_listing: MakeListing
) -> None:
    speech = await make_listing("speech-to-text", input_format="audio", output_format="text")
    embedder = await make_listing("sentence-embedder", input_format="tokens", output_format="vector")
    pipeline = await service.create(requester, "speech embeddings")
    first = await service.add_step(requester, pipeline.id, speech.id)
    await service.add_step(requester, pipeline.id, embedder.id)
    tokenizer = await make_listing("tokenizer", kind="algorithm", input_format="text", output_format="tokens")
    change = await service.add_step(requester, pipeline.id, tokenizer.id, after=first.step_id)
    assert [c.status for c in change.pipeline.connections] == [ConnectionStatus.OK, ConnectionStatus.OK]


async def test_removing_steps_re_evaluates_connections(
    service: PipelineService, requester: Actor, make_listing: MakeListing, vision: dict[str, Listing]
) -> None:
    pipeline = await service.create(requester, "street scenes")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    change = await service.add_step(requester, pipeline.id, vision["classifier"].id)
    (conditioner_id,) = change.inserted_conditioning_step_ids

    # Removing the conditioner by hand: the service proposes it again rather than re-inserting it.
    removed = await service.remove_step(requester, pipeline.id, conditioner_id)
    (open_connection,) = removed.opened
    assert [a.name for a in open_connection.alternatives] == ["boxes-to-crops"]
    assert "add one of the proposed conditioning steps" in open_connection.reason
    assert len(removed.pipeline.steps) == 2

    # Removing the last chosen step leaves one step and no connection; the orphaned link goes too.
    last = removed.pipeline.steps[-1].id
    shrunk = await service.remove_step(requester, pipeline.id, last)
    assert [s.listing_name for s in shrunk.pipeline.steps] == ["street-object-detector"]
    assert shrunk.pipeline.connections == ()


async def test_removing_a_middle_step_conditions_the_new_neighbours(
    service: PipelineService, requester: Actor, make_listing: MakeListing, vision: dict[str, Listing]
) -> None:
    passthrough = await make_listing(
        "box-filter",
        input_format="bounding-boxes",
        input_schema=None,
        output_format="bounding-boxes",
        output_schema=vision["detector"].output_schema,
    )
    pipeline = await service.create(requester, "filtered")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    middle = await service.add_step(requester, pipeline.id, passthrough.id)
    await service.add_step(requester, pipeline.id, vision["classifier"].id)
    change = await service.remove_step(requester, pipeline.id, middle.step_id)
    assert [s.listing_name for s in change.pipeline.steps] == [
        "street-object-detector",
        "boxes-to-crops",
        "crop-classifier",
    ]
    # The conditioner placed after the filter still bridges detector → classifier: it is kept.
    assert change.inserted_conditioning_step_ids == ()
    assert [c.status for c in change.pipeline.connections] == [ConnectionStatus.CONDITIONED]


async def test_unknown_forbidden_and_wrong_kind_listings_are_refused(
    service: PipelineService, requester: Actor, stranger: Actor, make_listing: MakeListing
) -> None:
    pipeline = await service.create(requester, "mine")
    hidden = await make_listing(
        "secret-model", input_format="text", output_format="text", visibility="private"
    )
    dataset = await make_listing("reviews", kind="dataset", input_format="text")
    with pytest.raises(NotFound, match="listing 'nope' not found"):
        await service.add_step(requester, pipeline.id, "nope")
    with pytest.raises(NotFound, match="not found"):
        await service.add_step(requester, pipeline.id, hidden.id)
    with pytest.raises(BadInput, match="'reviews' is a dataset") as not_a_step:
        await service.add_step(requester, pipeline.id, dataset.id)
    assert not_a_step.value.details == {"field": "listingId"}  # README: extensions.field when known
    with pytest.raises(BadInput, match="give either 'after' or 'atStart', not both") as both:
        await service.add_step(requester, pipeline.id, "nope", after="ghost", at_start=True)
    assert both.value.details == {"field": "atStart"}
    with pytest.raises(NotFound, match="step 'ghost' is not in this pipeline"):
        await service.add_step(
            requester, pipeline.id, (await make_listing("m", input_format="text")).id, after="ghost"
        )
    assert (await service.get(requester, pipeline.id)).steps == ()


async def test_a_step_whose_listing_was_made_private_later_shows_nothing_of_it(
    service: PipelineService,
    requester: Actor,
    producer: Actor,
    make_listing: MakeListing,
    db: Database,
) -> None:
    first = await make_listing("public-tokenizer", input_format="text", output_format="text")
    later_private = await make_listing("soon-secret-model", input_format="text", output_format="text")
    later_suspended = await make_listing("soon-suspended-model", input_format="text", output_format="text")
    pipeline = await service.create(requester, "chain")
    for listing in (first, later_private, later_suspended):
        await service.add_step(requester, pipeline.id, listing.id)
    async with db.session() as session:
        hidden = await session.get(Listing, later_private.id)
        hidden.visibility, hidden.name = "private", "secret-renamed-model"
        (await session.get(Listing, later_suspended.id)).verification_status = "suspended"

    view = await service.get(requester, pipeline.id)
    assert [s.available for s in view.steps] == [True, False, False]
    assert [s.listing_id for s in view.steps] == [first.id, later_private.id, later_suspended.id]
    assert "secret" not in repr(view) and "suspended-model" not in repr(view)
    assert [s.input_format for s in view.steps[1:]] == [None, None]
    assert [c.status for c in view.connections] == [ConnectionStatus.OPEN] * 2
    assert not view.is_runnable
    with pytest.raises(BadInput, match="the listing of step 2 is no longer available") as refused:
        await service.plan_run(requester, pipeline.id)
    assert "secret" not in str(refused.value) and later_private.id not in str(refused.value)
    # Its owner still sees it in full, as before.
    owned = await service.create(producer, "mine")
    await service.add_step(producer, owned.id, later_private.id)
    assert [s.listing_name for s in (await service.get(producer, owned.id)).steps] == ["secret-renamed-model"]


async def test_pipelines_are_private_to_their_owner(
    service: PipelineService, requester: Actor, stranger: Actor, make_listing: MakeListing
) -> None:
    model = await make_listing("public-model", input_format="text", output_format="text")
    pipeline = await service.create(requester, "mine")
    for call in (
        service.get(stranger, pipeline.id),
        service.add_step(stranger, pipeline.id, model.id),
        service.remove_step(stranger, pipeline.id, "x"),
    ):
        with pytest.raises(NotFound, match=r"pipeline .* not found"):
            await call
    with pytest.raises(Unauthenticated):
        await service.create(ANONYMOUS, "anonymous")
    with pytest.raises(BadInput, match="name is required") as blank:
        await service.create(requester, "  ")
    assert blank.value.details == {"field": "name"}  # README: extensions.field when known
    with pytest.raises(BadInput, match="description is longer") as long_description:
        await service.create(requester, "wordy", "x" * 100_000)
    assert long_description.value.details == {"field": "description"}
    assert [p.id for p in await service.list_mine(requester)] == [pipeline.id]
    assert await service.list_mine(stranger) == []
    with pytest.raises(NotFound):
        await service.delete(stranger, pipeline.id)
    await service.add_step(requester, pipeline.id, model.id)
    await service.delete(requester, pipeline.id)
    with pytest.raises(NotFound):
        await service.get(requester, pipeline.id)


async def test_a_pipeline_cannot_contain_itself(
    service: PipelineService, requester: Actor, make_listing: MakeListing, db: Database
) -> None:
    model = await make_listing("echo", input_format="text", output_format="text")
    inner = await service.create(requester, "inner")
    await service.add_step(requester, inner.id, model.id)
    inner_listing = await make_listing(
        "inner as listing", kind="pipeline", owner=requester, input_format="text", output_format="text"
    )
    outer = await service.create(requester, "outer")
    async with db.session() as session:
        (await session.get(Pipeline, inner.id)).listing_id = inner_listing.id
    await service.add_step(requester, outer.id, inner_listing.id)  # fine: outer contains inner
    outer_listing = await make_listing(
        "outer as listing", kind="pipeline", owner=requester, input_format="text", output_format="text"
    )
    async with db.session() as session:
        (await session.get(Pipeline, outer.id)).listing_id = outer_listing.id

    with pytest.raises(BadInput, match="would make pipeline 'inner' contain itself"):
        await service.add_step(requester, inner.id, inner_listing.id)
    with pytest.raises(BadInput, match="would make pipeline 'inner' contain itself") as cycle:
        await service.add_step(requester, inner.id, outer_listing.id)
    assert cycle.value.details == {"field": "listingId"}
    assert len((await service.get(requester, inner.id)).steps) == 1


async def test_algorithm_steps_take_training_data_of_matching_format(
    service: PipelineService, requester: Actor, make_listing: MakeListing, vision: dict[str, Listing]
) -> None:
    trainable = await crop_trainer(make_listing)
    crops = await labelled_crops(make_listing)
    texts = await make_listing("texts", kind="dataset", input_format="text")
    pipeline = await service.create(requester, "to train")
    change = await service.add_step(requester, pipeline.id, trainable.id, training_data_listing_id=crops.id)
    (step,) = change.pipeline.steps
    assert step.needs_training and not step.runnable and step.training_data_listing_id == crops.id
    assert not change.pipeline.is_runnable and change.pipeline.is_complete

    with pytest.raises(BadInput, match="has input_format text@1 but 'crop-classifier-trainer' learns from"):
        await service.set_training_data(requester, pipeline.id, step.id, texts.id)
    with pytest.raises(BadInput, match="must be a dataset listing"):
        await service.set_training_data(requester, pipeline.id, step.id, vision["classifier"].id)
    with pytest.raises(
        BadInput,
        match=r"'boxes-to-crops' runs as it is \(it declares no training_resources\), so it takes no",
    ):
        await service.add_step(
            requester, pipeline.id, vision["cropper"].id, training_data_listing_id=crops.id
        )
    cleared = await service.set_training_data(requester, pipeline.id, step.id, None)
    assert cleared.steps[0].training_data_listing_id is None


async def test_training_data_without_labels_is_refused_naming_the_field(
    service: PipelineService, requester: Actor, make_listing: MakeListing
) -> None:
    """A dataset that declares no labels (no output format) was accepted; its training then failed in
    the worker on the first example without a target. Every refusal names the argument it refuses."""
    trainable = await crop_trainer(make_listing)
    crops = await labelled_crops(make_listing)
    unlabelled = await make_listing("crops to label", kind="dataset", input_format="image-crops")
    pipeline = await service.create(requester, "to train")
    with pytest.raises(BadInput, match="'crops to label' declares no labels") as added:
        await service.add_step(requester, pipeline.id, trainable.id, training_data_listing_id=unlabelled.id)
    assert added.value.details == {"field": "trainingDataListingId"}
    assert not (await service.get(requester, pipeline.id)).steps  # the refused add left nothing
    (step,) = (await service.add_step(requester, pipeline.id, trainable.id)).pipeline.steps
    with pytest.raises(BadInput, match="'crops to label' declares no labels") as chosen:
        await service.set_training_data(requester, pipeline.id, step.id, unlabelled.id)
    assert chosen.value.details == {"field": "datasetListingId"}
    refusals = {
        "must be a dataset listing": trainable.id,
        "learns from": (await make_listing("texts", kind="dataset", input_format="text")).id,
    }
    for reason, listing_id in refusals.items():
        with pytest.raises(BadInput, match=reason) as refused:
            await service.set_training_data(requester, pipeline.id, step.id, listing_id)
        assert refused.value.details == {"field": "datasetListingId"}
    with pytest.raises(NotFound) as unknown:
        await service.set_training_data(requester, pipeline.id, step.id, "no-such-dataset")
    assert unknown.value.details == {"field": "datasetListingId"}
    with pytest.raises(NotFound) as no_step:
        await service.set_training_data(requester, pipeline.id, "no-such-step", crops.id)
    assert no_step.value.details == {"field": "stepId"}
    chosen_view = await service.set_training_data(requester, pipeline.id, step.id, crops.id)
    assert chosen_view.steps[0].training_data_listing_id == crops.id


async def test_adding_a_listing_found_by_search_meets_that_search(
    service: PipelineService, requester: Actor, make_listing: MakeListing, demand: DemandService, db: Database
) -> None:
    model = await make_listing("echo", input_format="text", output_format="text")
    search_id = await demand.log_search("echo text", result_count=1, account_id=requester.account_id)
    pipeline = await service.create(requester, "found")
    with pytest.raises(NotFound, match="no search with id 'nope'"):
        await service.add_step(requester, pipeline.id, model.id, search_id="nope")
    # Another account's search: refused as an unknown one (its holder could mark it met for them).
    theirs = await demand.log_search("echo text", result_count=1, account_id="0" * 32)
    with pytest.raises(NotFound, match=f"no search with id {theirs!r}"):
        await service.add_step(requester, pipeline.id, model.id, search_id=theirs)
    assert (await service.get(requester, pipeline.id)).steps == ()
    await service.add_step(requester, pipeline.id, model.id, search_id=search_id)
    async with db.session() as session:
        assert (await session.get(SearchEvent, search_id)).selected_listing_id == model.id


async def test_the_best_conditioner_is_found_among_many(
    service: PipelineService, requester: Actor, make_listing: MakeListing, db: Database
) -> None:
    """Candidates were cut to the first 200 rows the database returned, before they were ranked: with
    more fitting converters than that, the verified one could be left out of the choice."""
    tokenizer = await make_listing("wordpiece", kind="algorithm", input_format="text", output_format="tokens")
    reader = await make_listing("embedder", input_format="vector", output_format="class-label")
    async with db.session() as session:
        session.add_all(
            Listing(name=f"tokens-to-vector-{i:03}", kind="model", category="Natural Language Processing",
                    input_format="tokens@1", output_format="vector@1", accuracy=0.5)
            for i in range(210)
        )  # fmt: skip
    best = await make_listing(
        "verified-tokens-to-vector", input_format="tokens", output_format="vector",
        verification_status="verified", accuracy=0.9,
    )  # fmt: skip
    pipeline = await service.create(requester, "many converters")
    await service.add_step(requester, pipeline.id, tokenizer.id)
    change = await service.add_step(requester, pipeline.id, reader.id)
    assert [s.listing_id for s in change.pipeline.steps] == [tokenizer.id, best.id, reader.id]


async def test_concurrent_edits_of_one_pipeline_apply_one_after_the_other(
    service: PipelineService, requester: Actor, make_listing: MakeListing
) -> None:
    """On SQLite each edit read the steps before it held the write lock, so concurrent adds all took the
    same position and the pipeline's order was lost (PostgreSQL locks the pipeline row)."""
    first = await make_listing("first", input_format="text", output_format="text")
    others = [await make_listing(f"echo-{i}", input_format="text", output_format="text") for i in range(4)]
    pipeline = await service.create(requester, "busy")
    await service.add_step(requester, pipeline.id, first.id)
    await asyncio.gather(*(service.add_step(requester, pipeline.id, listing.id) for listing in others))
    steps = (await service.get(requester, pipeline.id)).steps
    assert [s.position for s in steps] == [0, 1, 2, 3, 4]
    assert steps[0].listing_id == first.id and {s.listing_id for s in steps[1:]} == {x.id for x in others}


async def test_a_gap_left_open_on_purpose_stays_open_when_a_later_step_is_auto_conditioned(
    service: PipelineService, requester: Actor, make_listing: MakeListing, vision: dict[str, Listing]
) -> None:
    """``autoCondition: false`` left detector → classifier open; the next ``addPipelineStep`` (auto on)
    re-bridged every misfit connection, so it silently inserted boxes-to-crops there too. It conditions
    only the connection it makes now."""
    labeller = await make_listing("label-namer", input_format="class-label", output_format="text")
    to_labels = await make_listing(
        "predictions-to-labels", kind="algorithm", input_format="predictions", output_format="class-label"
    )
    pipeline = await service.create(requester, "chosen gaps")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    kept_open = await service.add_step(requester, pipeline.id, vision["classifier"].id, auto_condition=False)
    assert [c.status for c in kept_open.pipeline.connections] == [ConnectionStatus.OPEN]

    change = await service.add_step(requester, pipeline.id, labeller.id)
    assert [s.listing_name for s in change.pipeline.steps] == [
        "street-object-detector",
        "crop-classifier",
        to_labels.name,
        "label-namer",
    ]
    assert [c.status for c in change.pipeline.connections] == [
        ConnectionStatus.OPEN,  # as the owner left it
        ConnectionStatus.CONDITIONED,  # the connection this call made
    ]
    assert len(change.inserted_conditioning_step_ids) == 1
    # Removing a step elsewhere does not fill it either; choosing the conditioner by hand still does.
    removed = await service.remove_step(requester, pipeline.id, change.step_id)
    assert [c.status for c in removed.pipeline.connections] == [ConnectionStatus.OPEN]
    first = removed.pipeline.steps[0].id
    bridged = await service.add_step(requester, pipeline.id, vision["cropper"].id, after=first)
    assert [c.status for c in bridged.pipeline.connections] == [ConnectionStatus.OK, ConnectionStatus.OK]
