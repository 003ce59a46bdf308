"""A listing deleted by its owner leaves the pipeline steps that use it in place, marked deleted: the
chain never silently shrinks (it did, through a cascading foreign key), its owner reads which step to
remove or replace, and a published chain refuses to run instead of running something else."""

from __future__ import annotations

import re

import pytest

from api.context import Services
from api.schema import build_schema
from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.pipelines import ConnectionStatus, PipelineService
from catalog.pipelines.publishing import publish_pipeline
from catalog.pipelines.training import PipelineTraining
from infra.errors import BadInput
from infra.settings import Settings
from infra.tables import Listing

from .conftest import MakeListing
from .graphql_support import run

DELETED_3 = (
    "the listing of step 3 was deleted by its owner; the pipeline runs again once its owner removes or "
    "replaces that step"
)
STEP_FIELDS = "position role listingId listingName available listingDeleted runnable notRunnableReason"


@pytest.fixture
def services(settings: Settings, catalog: CatalogApp) -> Services:
    return Services(settings=settings, catalog=catalog)


@pytest.fixture(scope="module")
def schema():
    return build_schema(("pipelines", "listings"))


async def test_a_deleted_listing_keeps_its_step_marked_deleted_through_the_api(
    schema,
    services: Services,
    service: PipelineService,
    producer: Actor,
    requester: Actor,
    vision: dict[str, Listing],
) -> None:
    pipeline = await service.create(requester, "street scenes")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    await service.add_step(requester, pipeline.id, vision["classifier"].id)  # boxes-to-crops in between

    deleted = await run(
        schema,
        services,
        producer,
        "mutation($id: ID!) { deleteListing(id: $id) { deleted } }",
        id=vision["classifier"].id,
    )
    assert deleted == {"deleteListing": {"deleted": True}}

    read = await run(
        schema,
        services,
        requester,
        f"query($id: ID!) {{ pipeline(id: $id) {{ isComplete isRunnable steps {{ {STEP_FIELDS} }} "
        "connections { status reason } } }",
        id=pipeline.id,
    )
    view = read["pipeline"]
    # The step is still there, at its place, with the deleted id and nothing else of the listing.
    assert [s["listingName"] for s in view["steps"]] == [
        "street-object-detector",
        "boxes-to-crops",
        "(deleted listing)",
    ]
    assert view["steps"][2] == {
        "position": 2,
        "role": "STEP",
        "listingId": vision["classifier"].id,
        "listingName": "(deleted listing)",
        "available": False,
        "listingDeleted": True,
        "runnable": False,
        "notRunnableReason": DELETED_3,
    }
    assert not view["steps"][0]["listingDeleted"] and not view["isRunnable"] and not view["isComplete"]
    assert view["connections"] == [
        {"status": "OPEN", "reason": "it goes through step 3, whose listing was deleted"}
    ]
    plan = await run(
        schema, services, requester, "query($id: ID!) { pipelineRunPlan(id: $id) { index } }", id=pipeline.id
    )
    assert plan["errors"][0]["code"] == "BAD_INPUT"
    assert plan["errors"][0]["message"] == (
        "pipeline 'street scenes' cannot run yet: open connection: it goes through step 3, whose listing "
        f"was deleted; {DELETED_3}"
    )

    # Its owner removes the step: the conditioner that fed it bridges nothing any more and goes too.
    removed = await run(
        schema,
        services,
        requester,
        "mutation($p: ID!, $s: ID!) { removePipelineStep(pipelineId: $p, stepId: $s) "
        "{ pipeline { steps { listingName } } } }",
        p=pipeline.id,
        s=(await service.get(requester, pipeline.id)).steps[2].id,
    )
    assert removed["removePipelineStep"]["pipeline"]["steps"] == [{"listingName": "street-object-detector"}]


async def test_a_deleted_conditioner_stays_until_its_owner_replaces_it(
    service: PipelineService,
    catalog: CatalogApp,
    producer: Actor,
    requester: Actor,
    make_listing: MakeListing,
    vision: dict[str, Listing],
) -> None:
    """Editing elsewhere in the chain neither drops the dead conditioner nor bridges around it silently;
    removing it leaves the connection to its owner, with the conditioners that could close it."""
    pipeline = await service.create(requester, "street scenes")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    await service.add_step(requester, pipeline.id, vision["classifier"].id)
    await make_listing(
        "other-cropper",
        kind="algorithm",
        package="cropper",
        input_format="bounding-boxes@1",
        input_schema=vision["cropper"].input_schema,
        output_format="image-crops@1",
    )
    await catalog.listings.delete(producer, vision["cropper"].id)
    calibrator = await make_listing(
        "calibrator", package="classifier", input_format="predictions@1", output_format="predictions@1"
    )
    change = await service.add_step(requester, pipeline.id, calibrator.id)
    steps = change.pipeline.steps
    assert [(s.listing_name, s.listing_deleted) for s in steps] == [
        ("street-object-detector", False),
        ("(deleted listing)", True),
        ("crop-classifier", False),
        ("calibrator", False),
    ]
    assert change.inserted_conditioning_step_ids == ()
    assert [c.status for c in change.pipeline.connections] == [ConnectionStatus.OPEN, ConnectionStatus.OK]
    assert steps[1].not_runnable_reason == DELETED_3.replace("step 3", "step 2")
    with pytest.raises(BadInput, match=re.escape(DELETED_3.replace("step 3", "step 2"))):
        await PipelineTraining(service).derive_post_training(requester, pipeline.id)

    change = await service.remove_step(requester, pipeline.id, steps[1].id)
    (opened,) = change.opened
    assert [a.name for a in opened.alternatives] == ["other-cropper"]
    assert [s.listing_name for s in change.pipeline.steps] == [
        "street-object-detector",
        "crop-classifier",
        "calibrator",
    ]


async def test_a_published_chain_with_a_deleted_step_refuses_to_run_and_tells_its_owner(
    service: PipelineService,
    catalog: CatalogApp,
    producer: Actor,
    requester: Actor,
    stranger: Actor,
    make_listing: MakeListing,
    vision: dict[str, Listing],
) -> None:
    """Before, the step went with the listing: the public listing ran detector → cropper for strangers and
    answered crops where it promised predictions."""
    pipeline = await service.create(requester, "codename falcon")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    await service.add_step(requester, pipeline.id, vision["classifier"].id)
    listing = await publish_pipeline(
        service, catalog.listings, requester, pipeline.id, name="street scenes", category="Vision"
    )
    await catalog.listings.delete(producer, vision["classifier"].id)

    with pytest.raises(BadInput, match=re.escape(DELETED_3)):
        await service.plan_listing_run(stranger, listing.id)
    view = await service.get(requester, pipeline.id)
    assert len(view.steps) == 3 and view.steps[2].listing_deleted
    assert view.listing_problem == (
        "step 3: its listing was deleted, so nobody the public listing 'street scenes' published from this "
        "pipeline reaches could run it; remove or replace that step, or make 'street scenes' private "
        "first (updateListing)"
    )

    # Removing it alone would leave the detector last, answering boxes where the listing promises
    # predictions: refused. Replaced first (the new step goes after it), it can then go.
    dead = view.steps[2].id
    with pytest.raises(BadInput, match=re.escape("step 1 'street-object-detector' would come last")):
        await service.remove_step(requester, pipeline.id, dead)
    replacement = await make_listing(
        "crop-classifier-2", package="classifier", input_format="image-crops@1", output_format="predictions@1"
    )
    await service.add_step(requester, pipeline.id, replacement.id, after=dead)
    view = (await service.remove_step(requester, pipeline.id, dead)).pipeline
    assert [s.listing_name for s in view.steps] == [
        "street-object-detector",
        "boxes-to-crops",
        "crop-classifier-2",
    ]
    assert view.listing_problem is None
    assert len((await service.plan_listing_run(stranger, listing.id)).steps) == 3
