"""The pipelines area of the GraphQL schema over the real catalog: thin resolvers, coded errors."""

from __future__ import annotations

import pytest

from api.context import Services
from api.schema import build_schema
from catalog.actors import ANONYMOUS, Actor
from catalog.app import CatalogApp
from infra.settings import Settings

from .conftest import BOXES_WITH_IMAGE, add_code_version, crop_trainer, labelled_crops
from .graphql_support import run

PIPELINE_FIELDS = """
  id name inputFormat outputFormat isComplete isRunnable
  steps {
    id position role listingName kind inputFormat outputFormat needsTraining runnable notRunnableReason
  }
  connections { fromStepId toStepId status reason conditioningStepIds alternatives { name verified } }
"""


@pytest.fixture
def services(settings: Settings, catalog: CatalogApp) -> Services:
    return Services(settings=settings, catalog=catalog)  # the area's service is ``catalog.pipelines``


@pytest.fixture(scope="module")
def schema():
    return build_schema(("pipelines",))


async def test_build_the_demo_chain_through_the_api(
    schema, services: Services, catalog: CatalogApp, producer: Actor, requester: Actor, stranger: Actor
) -> None:
    listings = catalog.listings
    detector = await listings.create(
        producer,
        {
            "name": "street-object-detector",
            "kind": "model",
            "category": "Computer Vision",
            "input_format": "image",
            "output_format": "bounding-boxes",
            "output_schema": BOXES_WITH_IMAGE,
            "resources": {"cpu": 2, "memory_mb": 2048, "gpu": 1},
        },
    )
    cropper = await listings.create(
        producer,
        {
            "name": "boxes-to-crops",
            "kind": "algorithm",
            "category": "Computer Vision",
            "input_format": "bounding-boxes",
            "input_schema": BOXES_WITH_IMAGE,
            "output_format": "image-crops",
        },
    )
    classifier = await listings.create(
        producer,
        {
            "name": "crop-classifier",
            "kind": "model",
            "category": "Computer Vision",
            "input_format": "image-crops",
            "output_format": "predictions",
        },
    )

    created = await run(schema, services, requester, 'mutation { createPipeline(name: "street") { id } }')
    pipeline_id = created["createPipeline"]["id"]
    add = f"""mutation($p: ID!, $l: ID!) {{ addPipelineStep(pipelineId: $p, listingId: $l) {{
        stepId insertedConditioningStepIds opened {{ status }} pipeline {{ {PIPELINE_FIELDS} }} }} }}"""
    await run(schema, services, requester, add, p=pipeline_id, l=detector.id)
    change = (await run(schema, services, requester, add, p=pipeline_id, l=classifier.id))["addPipelineStep"]

    pipeline = change["pipeline"]
    assert [s["listingName"] for s in pipeline["steps"]] == [
        "street-object-detector",
        "boxes-to-crops",
        "crop-classifier",
    ]
    assert [s["role"] for s in pipeline["steps"]] == ["STEP", "CONDITIONING", "STEP"]
    assert change["insertedConditioningStepIds"] == [pipeline["steps"][1]["id"]] and change["opened"] == []
    (connection,) = pipeline["connections"]
    assert connection["status"] == "CONDITIONED"
    assert (pipeline["inputFormat"], pipeline["outputFormat"]) == ("image@1", "predictions@1")
    # Listings created with createListing describe models but carry no code: complete, not runnable,
    # and each step says why (what runJob would answer).
    assert pipeline["isComplete"] and not pipeline["isRunnable"]
    assert pipeline["steps"][0]["notRunnableReason"] == (
        "step 1 'street-object-detector' cannot be run: it has no published code (a catalog entry only)"
    )
    assert not any(step["runnable"] for step in pipeline["steps"])
    plan_query = "query($id: ID!) { pipelineRunPlan(id: $id) { index role listingName resourceClass } }"
    refused = await run(schema, services, requester, plan_query, id=pipeline_id)
    assert refused["errors"][0]["code"] == "BAD_INPUT"
    assert "step 1 'street-object-detector' cannot be run" in refused["errors"][0]["message"]

    read = await run(
        schema,
        services,
        requester,
        f"query($id: ID!) {{ pipeline(id: $id) {{ {PIPELINE_FIELDS} }} }}",
        id=pipeline_id,
    )
    assert read["pipeline"] == pipeline
    hidden = await run(
        schema, services, stranger, "query($id: ID!) { pipeline(id: $id) { id } }", id=pipeline_id
    )
    assert hidden["errors"][0]["code"] == "NOT_FOUND"

    # The producer publishes code for each listing (a new version): the same pipeline can now run.
    for listing, package in ((detector, "detector"), (cropper, "cropper"), (classifier, "classifier")):
        await add_code_version(catalog.db, listing.id, package, version="1.0.1")
    read = await run(
        schema, services, requester, "query($id: ID!) { pipeline(id: $id) { isRunnable } }", id=pipeline_id
    )
    assert read["pipeline"]["isRunnable"]
    stages = await run(schema, services, requester, plan_query, id=pipeline_id)
    assert [(s["listingName"], s["resourceClass"]) for s in stages["pipelineRunPlan"]] == [
        ("street-object-detector", "gpu"),
        ("boxes-to-crops", "cpu"),
        ("crop-classifier", "cpu"),
    ]

    published = await run(
        schema,
        services,
        requester,
        'mutation($p: ID!) { publishPipeline(pipelineId: $p, name: "street pipeline") '
        "{ id kind name inputFormat outputFormat } }",
        p=pipeline_id,
    )
    assert published["publishPipeline"]["kind"] == "PIPELINE"
    assert published["publishPipeline"]["inputFormat"] == "image@1"
    again = await run(
        schema,
        services,
        requester,
        "mutation($p: ID!) { publishPipeline(pipelineId: $p) { id } }",
        p=pipeline_id,
    )
    assert again["errors"][0]["code"] == "CONFLICT"
    # Deleting it is refused while its listing exists (the listing runs from these steps), as the schema
    # says: its description promised "a published listing stays" while the call answered CONFLICT.
    deleted = await run(
        schema, services, requester, "mutation($p: ID!) { deletePipeline(id: $p) }", p=pipeline_id
    )
    assert deleted["errors"][0]["code"] == "CONFLICT"
    assert "delete that listing first" in deleted["errors"][0]["message"]
    fields = await run(
        schema, services, requester, '{ __type(name: "Mutation") { fields { name description } } }'
    )
    (described,) = [f["description"] for f in fields["__type"]["fields"] if f["name"] == "deletePipeline"]
    assert "CONFLICT" in described and "delete that listing first" in described and "stays" not in described
    # Its owner is told when a step's owner withdraws it from the listing's audience.
    problem = "query($id: ID!) { pipeline(id: $id) { listingProblem } }"
    assert (await run(schema, services, requester, problem, id=pipeline_id))["pipeline"][
        "listingProblem"
    ] is None
    await listings.update(producer, classifier.id, {"visibility": "private"})
    read = await run(schema, services, requester, problem, id=pipeline_id)
    assert read["pipeline"]["listingProblem"].startswith("step 3 is private, so nobody the public listing")
    await listings.update(producer, classifier.id, {"visibility": "public"})

    remove = (
        "mutation($p: ID!, $s: ID!) { removePipelineStep(pipelineId: $p, stepId: $s) "
        "{ opened { status reason alternatives { name } } } }"
    )
    # The conditioner of a published chain stays: its listing runs this chain for others.
    removed = await run(schema, services, requester, remove, p=pipeline_id, s=pipeline["steps"][1]["id"])
    assert removed["errors"][0]["code"] == "BAD_INPUT"
    assert removed["errors"][0]["message"].startswith(
        "step 1 'street-object-detector' → step 2 'crop-classifier' would no longer fit, and the public "
        "listing 'street pipeline' published from this pipeline runs this chain for others"
    )
    await listings.update(requester, published["publishPipeline"]["id"], {"visibility": "private"})
    removed = await run(schema, services, requester, remove, p=pipeline_id, s=pipeline["steps"][1]["id"])
    (opened,) = removed["removePipelineStep"]["opened"]
    assert opened["status"] == "OPEN" and opened["alternatives"] == [{"name": "boxes-to-crops"}]


async def test_errors_carry_codes(schema, services: Services, requester: Actor) -> None:
    anonymous = await run(schema, services, ANONYMOUS, 'mutation { createPipeline(name: "x") { id } }')
    assert anonymous["errors"][0]["code"] == "UNAUTHENTICATED"
    created = await run(schema, services, requester, 'mutation { createPipeline(name: "x") { id } }')
    bad = await run(
        schema,
        services,
        requester,
        'mutation($p: ID!) { addPipelineStep(pipelineId: $p, listingId: "missing") { stepId } }',
        p=created["createPipeline"]["id"],
    )
    assert bad["errors"] == [{"message": "listing 'missing' not found", "code": "NOT_FOUND"}]
    empty = await run(schema, services, requester, 'mutation { createPipeline(name: "") { id } }')
    assert empty["errors"][0]["code"] == "BAD_INPUT"


async def test_training_data_is_cleared_by_leaving_the_dataset_out(
    schema, services: Services, make_listing, requester: Actor
) -> None:
    """The schema makes ``datasetListingId`` optional ("clear, with null"), but the resolver required it:
    leaving it out was a TypeError, INTERNAL to the client."""
    trainable = await crop_trainer(make_listing)
    crops = await labelled_crops(make_listing)
    created = await run(schema, services, requester, 'mutation { createPipeline(name: "t") { id } }')
    pipeline_id = created["createPipeline"]["id"]
    added = await run(
        schema,
        services,
        requester,
        "mutation($p: ID!, $l: ID!, $d: ID) { addPipelineStep(pipelineId: $p, listingId: $l, "
        "trainingDataListingId: $d) { stepId } }",
        p=pipeline_id,
        l=trainable.id,
        d=crops.id,
    )
    step_id = added["addPipelineStep"]["stepId"]
    cleared = await run(
        schema,
        services,
        requester,
        "mutation($p: ID!, $s: ID!) { setPipelineTrainingData(pipelineId: $p, stepId: $s) "
        "{ steps { trainingDataListingId } } }",
        p=pipeline_id,
        s=step_id,
    )
    assert cleared == {"setPipelineTrainingData": {"steps": [{"trainingDataListingId": None}]}}
