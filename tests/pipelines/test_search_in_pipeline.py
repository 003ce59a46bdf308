"""``Query.search(input: {pipeline, position})`` over the real catalog and index: only listings that fit
the pipeline's open slot come back — formats filtered before ranking, exact schemas after hydration."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from api.context import Services
from api.schema import build_schema
from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.search_service import SearchRequest
from infra.settings import Settings
from infra.tables import SearchEvent

from .conftest import BOXES_WITH_IMAGE
from .graphql_support import run

SEARCH = """query($text: String!, $p: ID, $pos: Int, $kinds: [ListingKind!]) {
  search(input: {text: $text, pipeline: $p, position: $pos, kinds: $kinds}) {
    totalCount results { listing { name } } } }"""

ADD_UNCONDITIONED = """mutation($p: ID!, $l: ID!) {
  addPipelineStep(pipelineId: $p, listingId: $l, autoCondition: false) { stepId } }"""


@pytest.fixture(scope="module")
def schema():
    return build_schema(("search", "pipelines"))


def names(page: dict[str, Any]) -> list[str]:
    return sorted(r["listing"]["name"] for r in page["search"]["results"])


async def test_search_in_a_pipeline_slot_returns_only_what_fits(
    schema, settings: Settings, catalog: CatalogApp, producer: Actor, requester: Actor, stranger: Actor
) -> None:
    services = Services(settings=settings, catalog=catalog)
    vision = {"category": "Computer Vision"}
    make = catalog.listings.create
    detector = await make(
        producer,
        {
            **vision,
            "name": "street object detector",
            "kind": "model",
            "input_format": "image",
            "output_format": "bounding-boxes",
            "output_schema": BOXES_WITH_IMAGE,
        },
    )
    classifier = await make(
        producer,
        {
            **vision,
            "name": "crop classifier",
            "kind": "model",
            "input_format": "image-crops",
            "output_format": "predictions",
        },
    )
    await make(
        producer,
        {
            **vision,
            "name": "crop boxes out of images",
            "kind": "algorithm",
            "input_format": "bounding-boxes",
            "input_schema": BOXES_WITH_IMAGE,
            "output_format": "image-crops",
        },
    )
    # Right formats, but it needs the image beside the boxes in a shape the detector does not emit.
    await make(
        producer,
        {
            **vision,
            "name": "crop boxes from a url",
            "kind": "algorithm",
            "input_format": "bounding-boxes",
            "input_schema": {
                "type": "object",
                "required": ["boxes", "url"],
                "properties": {"boxes": BOXES_WITH_IMAGE["properties"]["boxes"], "url": {"type": "string"}},
            },
            "output_format": "image-crops",
        },
    )
    await make(
        producer,
        {
            **vision,
            "name": "crop images to squares",
            "kind": "model",
            "input_format": "image",
            "output_format": "image",
        },
    )

    created = await run(schema, services, requester, 'mutation { createPipeline(name: "slots") { id } }')
    pipeline_id = created["createPipeline"]["id"]
    for listing in (detector, classifier):
        await run(
            schema,
            services,
            requester,
            ADD_UNCONDITIONED,
            p=pipeline_id,
            l=listing.id,
        )

    everything = await run(schema, services, requester, SEARCH, text="crop")
    assert len(everything["search"]["results"]) >= 4
    between = await run(schema, services, requester, SEARCH, text="crop", p=pipeline_id, pos=1)
    assert names(between) == ["crop boxes out of images"]  # the url cropper fails the exact schema
    at_end = await run(schema, services, requester, SEARCH, text="crop", p=pipeline_id)
    assert names(at_end) == []  # nothing reads predictions
    at_start = await run(schema, services, requester, SEARCH, text="crop", p=pipeline_id, pos=0)
    assert names(at_start) == ["crop images to squares"]  # emits the image the detector reads

    wrong_kind = await run(
        schema, services, requester, SEARCH, text="crop", p=pipeline_id, pos=1, kinds=["DATASET"]
    )
    assert wrong_kind["errors"][0]["code"] == "BAD_INPUT"
    out_of_range = await run(schema, services, requester, SEARCH, text="crop", p=pipeline_id, pos=7)
    assert out_of_range["errors"][0]["code"] == "BAD_INPUT"
    not_theirs = await run(schema, services, stranger, SEARCH, text="crop", p=pipeline_id, pos=1)
    assert not_theirs["errors"][0]["code"] == "NOT_FOUND"


async def test_a_page_whose_candidates_misfit_the_slot_still_leads_to_the_next_page(
    schema, settings: Settings, catalog: CatalogApp, producer: Actor, requester: Actor
) -> None:
    """Candidates that fail the exact schema are dropped after ranking; the listings ranked after them
    must still be reachable, so ``hasNextPage`` counts what was ranked, not what this page kept."""
    services = Services(settings=settings, catalog=catalog)
    vision = {"category": "Computer Vision"}
    make = catalog.listings.create
    detector = await make(
        producer,
        {**vision, "name": "street object detector", "kind": "model", "input_format": "image",
         "output_format": "bounding-boxes", "output_schema": BOXES_WITH_IMAGE},
    )  # fmt: skip
    url_schema = {
        "type": "object",
        "required": ["boxes", "url"],
        "properties": {"boxes": BOXES_WITH_IMAGE["properties"]["boxes"], "url": {"type": "string"}},
    }
    await make(
        producer,
        {**vision, "name": "crop boxes from a url", "kind": "algorithm", "input_format": "bounding-boxes",
         "input_schema": url_schema, "output_format": "image-crops"},
    )  # fmt: skip
    await make(
        producer,
        {**vision, "name": "cut detections out of pictures", "kind": "algorithm",
         "input_format": "bounding-boxes", "input_schema": BOXES_WITH_IMAGE, "output_format": "image-crops"},
    )  # fmt: skip
    created = await run(schema, services, requester, 'mutation { createPipeline(name: "paged") { id } }')
    pipeline_id = created["createPipeline"]["id"]
    await run(schema, services, requester, ADD_UNCONDITIONED, p=pipeline_id, l=detector.id)

    query = """query($p: ID, $after: String) {
      search(input: {text: "crop boxes from a url", pipeline: $p, limit: 1, after: $after}) {
        results { listing { name } } pageInfo { hasNextPage endCursor } } }"""
    found: list[str] = []
    after = None
    for _ in range(5):
        page = (await run(schema, services, requester, query, p=pipeline_id, after=after))["search"]
        found += [r["listing"]["name"] for r in page["results"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert found == ["cut detections out of pictures"]


async def test_a_step_added_right_after_the_search_meets_it(
    settings: Settings, catalog: CatalogApp, producer: Actor, requester: Actor
) -> None:
    """Searches are logged in batches; the searchId handed back must be usable at once, not only after
    the batch is written (it was NOT_FOUND within ``demand_log_batch_s`` of the search)."""
    catalog.demand.settings = settings.model_copy(update={"demand_log_batch_s": 60.0})
    echo = await catalog.listings.create(
        producer,
        {"name": "echo text", "kind": "model", "category": "Natural Language Processing",
         "input_format": "text", "output_format": "text"},
    )  # fmt: skip
    pipeline = await catalog.pipelines.create(requester, "found at once")
    found = await catalog.search.search(requester, SearchRequest(text="echo text"))
    assert found.search_id is not None and found.ids == [echo.id]
    await catalog.pipelines.add_step(requester, pipeline.id, echo.id, search_id=found.search_id)
    async with catalog.db.session() as session:
        assert (await session.get(SearchEvent, found.search_id)).selected_listing_id == echo.id


async def test_a_slot_search_pages_what_its_first_page_ranked(
    catalog: CatalogApp, producer: Actor, requester: Actor
) -> None:
    """A listing that fits the slot, published between two pages, neither pushes a listing of the first
    page onto the second nor hides one: the pages are those of the search as it was ranked."""

    def made(name: str, kind: str, **formats: Any) -> dict[str, Any]:
        return {"category": "Computer Vision", "name": name, "kind": kind, **formats}

    def cropper(name: str) -> dict[str, Any]:
        return made(name, "algorithm", input_format="bounding-boxes", input_schema=BOXES_WITH_IMAGE,
                    output_format="image-crops")  # fmt: skip

    make = catalog.listings.create
    detector = await make(
        producer,
        made("street object detector", "model", input_format="image", output_format="bounding-boxes",
             output_schema=BOXES_WITH_IMAGE),
    )  # fmt: skip

    for thing in ("cars", "people", "signs", "bicycles", "lamps"):
        await make(producer, cropper(f"crop {thing} out of pictures"))
    pipeline = await catalog.pipelines.create(requester, "paged")
    await catalog.pipelines.add_step(requester, pipeline.id, detector.id, auto_condition=False)
    request = SearchRequest(text="crop detected boxes out of pictures", pipeline_id=pipeline.id, limit=2)

    async def pages(change=None) -> list[str]:
        response = await catalog.search.search(requester, request)
        ids = list(response.ids)
        if change is not None:
            await change()
        while response.has_next_page:
            response = await catalog.search.search(requester, replace(request, after=response.end_cursor))
            ids += response.ids
        return ids

    expected = await pages()
    assert len(expected) == 5

    async def publish() -> None:
        await make(producer, cropper("crop detected boxes out of pictures"))

    assert await pages(publish) == expected


SEARCH_WITH_NOTES = """query($text: String!, $p: ID, $pos: Int) {
  search(input: {text: $text, pipeline: $p, position: $pos}) { notes results { listing { name } } } }"""


async def test_a_slot_next_to_a_deleted_or_hidden_step_says_that_side_is_unconstrained(
    schema, settings: Settings, catalog: CatalogApp, producer: Actor, requester: Actor
) -> None:
    """A step whose listing was deleted stays (``listingDeleted``) with nothing left to narrow by: the
    slot beside it offered every candidate for that side without saying why. The search now says so in
    its notes; and a neighbour the requester may no longer see is treated the same, where its withdrawn
    formats still narrowed the candidates (showing them by what came back)."""
    services = Services(settings=settings, catalog=catalog)
    vision = {"category": "Computer Vision"}

    async def make(name: str, kind: str, input_format: str, output_format: str) -> str:
        made = await catalog.listings.create(
            producer,
            {
                **vision,
                "name": name,
                "kind": kind,
                "input_format": input_format,
                "output_format": output_format,
            },
        )
        return made.id

    detector = await make("street object detector", "model", "image", "bounding-boxes")
    classifier = await make("crop classifier", "model", "image-crops", "predictions")
    await make("crop boxes out of images", "algorithm", "bounding-boxes", "image-crops")
    await make("crop boxes into labels", "algorithm", "bounding-boxes", "predictions")
    await make("crop images to squares", "model", "image", "image")
    created = await run(schema, services, requester, 'mutation { createPipeline(name: "slots") { id } }')
    pipeline_id = created["createPipeline"]["id"]
    for listing_id in (detector, classifier):
        await run(schema, services, requester, ADD_UNCONDITIONED, p=pipeline_id, l=listing_id)

    async def slot_search() -> tuple[list[str], list[str]]:
        page = await run(schema, services, requester, SEARCH_WITH_NOTES, text="crop", p=pipeline_id, pos=1)
        slot_notes = [note for note in page["search"]["notes"] if "this slot" in note]  # not interpretation's
        return names(page), slot_notes

    assert await slot_search() == (["crop boxes out of images"], [])
    await catalog.listings.delete(producer, classifier)
    found, notes = await slot_search()
    assert found == ["crop boxes into labels", "crop boxes out of images"]  # what they emit: anything
    assert notes == [
        "the listing of step 2, after this slot, was deleted by its owner: candidates are not narrowed by "
        "what they emit; remove or replace that step"
    ]
    await catalog.listings.update(producer, detector, {"visibility": "private"})
    found, notes = await slot_search()
    assert found == ["crop boxes into labels", "crop boxes out of images", "crop images to squares"]
    assert notes[0] == (
        "the listing of step 1, before this slot, is no longer available to you: candidates are not "
        "narrowed by what they read; remove or replace that step"
    )
    assert len(notes) == 2
