"""Search through the catalog: facets validated and applied, ranking explained, visibility, paging, logs."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from catalog_helpers import listing_data, make_actor
from sqlalchemy import select

from catalog.actors import ANONYMOUS, Actor
from catalog.app import CatalogApp
from catalog.search_service import ResourceLimits, SearchRequest, encoded
from catalog.seed import seed_demo
from infra.errors import BadInput
from infra.tables import SearchEvent
from search.embeddings import Encoder


@pytest.fixture
async def demo(app: CatalogApp) -> CatalogApp:
    report = await seed_demo(app)
    assert report.errors == [] and report.created >= 30
    return app


async def test_demo_sentiment_model_is_in_the_top_three(demo: CatalogApp) -> None:
    response = await demo.search.search(
        ANONYMOUS, SearchRequest(text="classify the sentiment of product reviews", limit=3)
    )
    top = [(r.listing.name, r.listing.kind) for r in response.results]
    assert ("review-sentiment-classifier", "model") in top
    result = next(r for r in response.results if r.listing.name == "review-sentiment-classifier")
    assert result.score == pytest.approx(sum(p.value for p in result.parts))
    assert {"semantic", "keyword"} <= {p.name for p in result.parts}
    assert result.explanation and response.notes  # explained, and the inferred category is shown
    assert response.search_id is not None


async def test_facets_filter_before_ranking(demo: CatalogApp) -> None:
    async def names(**facets: object) -> list[str]:
        response = await demo.search.search(
            ANONYMOUS, SearchRequest(text="classify images", limit=50, **facets)
        )
        return [r.listing.name for r in response.results]

    assert set(await names(kinds=["DATASET"])) <= {
        "product-reviews-en",
        "street-scenes-detection",
        "labelled-vehicle-crops",
        "spoken-commands",
        "loan-applications",
    }
    detected = await names(input_format="image", output_format="bounding-boxes")
    assert "street-object-detector" in detected and "general-image-classifier" not in detected
    assert "news-article-summarizer" not in await names(
        resources=ResourceLimits(cpu=2, memory_mb=4096, gpu=0)
    )
    assert all(
        r.listing.latency_p50_ms is not None and r.listing.latency_p50_ms <= 20
        for r in (
            await demo.search.search(ANONYMOUS, SearchRequest(text="classify", max_latency_ms=20, limit=50))
        ).results
    )
    in_cv = await names(category="computer vision")  # any case: the category as listings spell it
    assert in_cv and all(
        r.listing.category == "Computer Vision"
        for r in (
            await demo.search.search(ANONYMOUS, SearchRequest(text="x", category="computer vision"))
        ).results
    )


async def test_the_subcategory_facet_matches_in_any_case_like_category(demo: CatalogApp) -> None:
    """README: category and subcategory are exact facets, case-insensitive. Only category was: a
    subcategory typed "object detection" found nothing, with text or without."""
    for text in ("detect cars in street photos", None):
        as_spelled = await demo.search.search(
            ANONYMOUS, SearchRequest(text=text, subcategory="Object Detection", limit=50)
        )
        assert as_spelled.total_count >= 2
        for typed in ("object detection", "OBJECT DETECTION "):
            response = await demo.search.search(
                ANONYMOUS, SearchRequest(text=text, subcategory=typed, limit=50)
            )
            assert [r.listing.id for r in response.results] == [r.listing.id for r in as_spelled.results]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (SearchRequest(text="x", kinds=["spaceship"]), "kinds"),
        (SearchRequest(text="x", sort="popularity"), "sort"),
        (SearchRequest(text="x", max_latency_ms=-1), "maxLatencyMs"),
        (SearchRequest(text="x", min_accuracy=1.5), "minAccuracy"),
        (SearchRequest(text="x", min_accuracy=float("nan")), "minAccuracy"),
        (SearchRequest(text="x" * 1001), "text"),
        (SearchRequest(text="x", limit=0), "limit"),
        (SearchRequest(text="x", limit=1000), "limit"),
        (SearchRequest(text="x", input_format="hologram"), "inputFormat"),
        (SearchRequest(text="x", resources=ResourceLimits(cpu=-2)), "resources.cpu"),
        # The facet took amounts no job runs on (README: the same rule as a job's resources).
        (SearchRequest(text="x", resources=ResourceLimits(cpu=0)), "resources.cpu"),
        (SearchRequest(text="x", resources=ResourceLimits(memory_mb=32)), "resources.memoryMb"),
        (SearchRequest(text="x", resources=ResourceLimits(gpu=-1)), "resources.gpu"),
        (SearchRequest(text="x", after="garbage"), "after"),
        # A slot without its pipeline (say, a null variable) searched everything, unrestricted.
        (SearchRequest(text="x", position=1), "position"),
    ],
)
async def test_invalid_requests_are_bad_input(app: CatalogApp, request_: SearchRequest, field: str) -> None:
    with pytest.raises(BadInput) as caught:
        await app.search.search(ANONYMOUS, request_)
    assert caught.value.details.get("field") == field


async def test_search_respects_visibility(app: CatalogApp, alice: Actor, bob: Actor, admin: Actor) -> None:
    await app.listings.create(alice, listing_data("public-sentiment"))
    await app.listings.create(alice, listing_data("private-sentiment", visibility="private"))
    await app.listings.create(
        alice, listing_data("shared-sentiment", visibility="shared", shared_with=["bob"])
    )
    carol = await make_actor(app, "carol", "requester")

    async def seen_by(actor: Actor) -> set[str]:
        for request in (SearchRequest(text="sentiment classifier", limit=10), SearchRequest(limit=10)):
            response = await app.search.search(actor, request)
            names = {r.listing.name for r in response.results}
            assert response.total_count == len(names)
        return names

    assert await seen_by(ANONYMOUS) == await seen_by(carol) == {"public-sentiment"}
    assert await seen_by(bob) == {"public-sentiment", "shared-sentiment"}
    everything = {"public-sentiment", "private-sentiment", "shared-sentiment"}
    assert await seen_by(alice) == await seen_by(admin) == everything


async def test_paging_with_cursors(demo: CatalogApp) -> None:
    request = SearchRequest(text="model", limit=4)
    seen: list[str] = []
    first = await demo.search.search(ANONYMOUS, request)
    response = first
    while True:
        seen += response.ids
        if not response.has_next_page:
            break
        response = await demo.search.search(
            ANONYMOUS, SearchRequest(text="model", limit=4, after=response.end_cursor)
        )
        assert response.search_id is None  # later pages are not new searches
    assert len(seen) == len(set(seen)) == first.total_count
    with pytest.raises(BadInput, match="different search"):
        await demo.search.search(ANONYMOUS, SearchRequest(text="other", limit=4, after=first.end_cursor))


async def test_paging_past_the_candidate_depth_neither_repeats_nor_skips(demo: CatalogApp) -> None:
    """Every page of a text search ranks the same candidates: a deeper retrieval on a later page re-scales
    the fused scores and reorders the listings, so earlier pages' listings came back and others never did."""
    demo.ranker.weights = replace(demo.ranker.weights, candidate_depth=4)
    demo.search.settings = demo.settings.model_copy(update={"max_page_size": 4})
    first = await demo.search.search(ANONYMOUS, SearchRequest(text="classify text or images", limit=3))
    seen, response = list(first.ids), first
    while response.has_next_page:
        response = await demo.search.search(
            ANONYMOUS, SearchRequest(text="classify text or images", limit=3, after=response.end_cursor)
        )
        assert response.total_count == first.total_count
        seen += response.ids
    assert len(seen) == len(set(seen)) == first.total_count


async def test_sorts_order_by_their_field(demo: CatalogApp) -> None:
    by_accuracy = await demo.search.search(
        ANONYMOUS, SearchRequest(text="classify", sort="ACCURACY", limit=10)
    )
    accuracies = [r.listing.accuracy for r in by_accuracy.results if r.listing.accuracy is not None]
    assert accuracies == sorted(accuracies, reverse=True)
    for result in by_accuracy.results:  # the parts still add up to the score (the sort adds nothing)
        assert result.score == pytest.approx(sum(part.value for part in result.parts))
        assert result.parts[0].detail.startswith("sorted by accuracy")
    by_latency = await demo.search.search(ANONYMOUS, SearchRequest(sort="latency", limit=50))
    latencies = [r.listing.latency_p50_ms for r in by_latency.results if r.listing.latency_p50_ms is not None]
    assert latencies == sorted(latencies) and by_latency.total_count == 39
    newest = await demo.search.search(ANONYMOUS, SearchRequest(limit=5))
    assert [r.listing.created_at for r in newest.results] == sorted(
        (r.listing.created_at for r in newest.results), reverse=True
    )


async def test_a_browse_explains_its_score_under_every_sort(demo: CatalogApp, admin: Actor) -> None:
    """README: the parts sum to the score. A browse (no text) sorted by LATENCY scored each result by
    its latency (15.0) and explained it with a part of -15.0; every page of every sort must add up."""
    for sort in ("RELEVANCE", "USAGE", "ACCURACY", "LATENCY", "NEWEST"):
        response = await demo.search.search(ANONYMOUS, SearchRequest(sort=sort, limit=20))
        pages = [response]
        while response.has_next_page:
            response = await demo.search.search(
                ANONYMOUS, SearchRequest(sort=sort, limit=20, after=response.end_cursor)
            )
            pages.append(response)
        results = [r for page in pages for r in page.results]
        assert len(results) == 39
        for result in results:
            assert result.score == pytest.approx(sum(part.value for part in result.parts)), (sort, result)
    latency = await demo.search.search(ANONYMOUS, SearchRequest(sort="LATENCY", limit=1))
    assert latency.results[0].score == latency.results[0].listing.latency_p50_ms
    # A measured latency is a float of many digits: the sentence reads "p50 335.1 ms", as the latency
    # part of a relevance explanation does, not "p50 335.0716883323912 ms".
    slow = await demo.listings.update(
        admin, latency.results[0].listing.id, {"latency_p50_ms": 0.0716883323912}
    )
    browsed = await demo.search.search(ANONYMOUS, SearchRequest(sort="LATENCY", limit=1))
    assert browsed.results[0].listing.id == slow.id
    assert browsed.results[0].parts[0].detail == "sorted by latency: p50 0.07169 ms"


async def test_searches_are_logged_and_selections_recorded(demo: CatalogApp) -> None:
    response = await demo.search.search(ANONYMOUS, SearchRequest(text="translate english to german", limit=3))
    chosen = response.results[0].listing.id
    await demo.search.record_selection(response.search_id, chosen, ANONYMOUS)
    nothing = await demo.search.search(
        ANONYMOUS, SearchRequest(text="zzkqv", kinds=["notebook"], max_latency_ms=1)
    )
    assert nothing.results == [] and nothing.total_count == 0
    await demo.search.flush()  # searches are logged in the background
    async with demo.db.session() as session:
        events = {e.id: e for e in (await session.scalars(select(SearchEvent))).all()}
    logged = events[response.search_id]
    assert logged.text == "translate english to german" and logged.selected_listing_id == chosen
    assert logged.top_ids == response.ids and logged.result_count == response.total_count
    assert logged.category == "Natural Language Processing"  # inferred
    empty = events[nothing.search_id]
    assert empty.result_count == 0 and empty.facets["kinds"] == ["notebook"]


async def test_a_cached_query_encoding_is_read_without_a_trip_through_the_loop(encoder: Encoder) -> None:
    """A search whose vector is cached used to wait a loop iteration (and the self-pipe's write and read)
    for a result already in hand; one still on the model thread is still awaited."""
    text = "segment cells in microscopy images"
    fresh = await encoded(encoder.submit_query(text + " fresh"))
    assert fresh.vector.shape == (encoder.dim,)
    encoder.encode_query(text)
    ran: list[bool] = []
    asyncio.get_running_loop().call_soon(ran.append, True)
    cached = await encoded(encoder.submit_query(text))
    assert ran == []  # the loop did not run in between
    assert cached.vector is encoder.encode_query(text)
