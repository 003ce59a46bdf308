"""Point-in-time search paging: later pages read the snapshot of what the first page ranked, so listings
published, edited or boosted in between neither repeat nor go missing; expired, foreign and altered
cursors are refused; another process (a second ``CatalogApp`` on the same database) serves the next page.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from catalog_helpers import listing_data, make_actor
from sqlalchemy import func, select

from catalog.actors import ANONYMOUS, Actor
from catalog.app import CatalogApp
from catalog.search_service import SearchRequest, SearchResponse
from catalog.search_snapshots import CURSOR_PREFIX
from infra.errors import BadInput, CursorExpired
from infra.settings import Settings
from infra.tables import SearchSnapshot, utcnow
from ranking.pending import is_packed, unpack
from search.embeddings import Encoder

TEXT = "classify the sentiment of product reviews"
TOPICS = ("hotel stays", "phone apps", "restaurants", "movies", "books", "games", "shoes", "cars")


async def fill(app: CatalogApp, owner: Actor) -> list[str]:
    """Eight listings that a sentiment search ranks, in no particular order of relevance."""
    made = []
    for i, topic in enumerate(TOPICS):
        data = listing_data(
            f"sentiment-{i}",
            description=f"Tells whether reviews of {topic} are positive or negative.",
            accuracy=0.6 + 0.04 * i,
            latency_ms=5 + 3 * i,
        )
        made.append((await app.listings.create(owner, data)).id)
    return made


async def rest_of(
    app: CatalogApp, actor: Actor, request: SearchRequest, first: SearchResponse
) -> list[SearchResponse]:
    """The pages after ``first``, following each endCursor."""
    pages, response = [], first
    while response.has_next_page:
        assert response.end_cursor is not None
        response = await app.search.search(actor, _after(request, response.end_cursor))
        pages.append(response)
    return pages


def _after(request: SearchRequest, cursor: str) -> SearchRequest:
    return replace(request, after=cursor)


def cursor_fields(cursor: str) -> dict:
    """What an opaque cursor holds (a client never needs this; a test that alters one does)."""
    body = cursor[len(CURSOR_PREFIX) :]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


async def every_id(app: CatalogApp, actor: Actor, request: SearchRequest) -> list[str]:
    first = await app.search.search(actor, request)
    return first.ids + [i for page in await rest_of(app, actor, request, first) for i in page.ids]


async def paged_across(
    app: CatalogApp, actor: Actor, request: SearchRequest, change: Callable[[], Awaitable[object]]
) -> list[str]:
    """Every id of ``request``'s pages, with ``change`` made between the first page and the second."""
    first = await app.search.search(actor, request)
    assert first.has_next_page
    await change()
    return first.ids + [i for page in await rest_of(app, actor, request, first) for i in page.ids]


@pytest.mark.parametrize("sort", ["relevance", "usage", "accuracy"])
async def test_text_search_pages_stay_put_while_listings_are_added_edited_and_boosted(
    app: CatalogApp, alice: Actor, sort: str
) -> None:
    made = await fill(app, alice)
    request = SearchRequest(text=TEXT, sort=sort, limit=3)
    expected = await every_id(app, ANONYMOUS, request)
    assert sorted(expected) == sorted(made)

    async def change() -> None:
        newcomer = listing_data(
            "product-review-sentiment",
            description="Classify the sentiment of product reviews: positive or negative.",
            accuracy=0.99,
        )
        top = (await app.listings.create(alice, newcomer)).id
        for _ in range(3):  # the most used now: first by usage
            await app.usage.record(top, "inference", success=True, latency_ms=3)
            await app.usage.record(expected[-1], "inference", success=True, latency_ms=3)
        await app.listings.update(
            alice, expected[-1], {"description": newcomer["description"], "accuracy": 0.98}
        )

    assert await paged_across(app, ANONYMOUS, request, change) == expected


async def test_later_pages_carry_the_scores_and_explanations_the_first_page_ranked(
    app: CatalogApp, alice: Actor
) -> None:
    """The first page explains only its own results; the others' explanations are built when the
    snapshot is written, and must be exactly those a larger first page shows."""
    await fill(app, alice)
    whole = await app.search.search(ANONYMOUS, SearchRequest(text=TEXT, limit=6))
    first = await app.search.search(ANONYMOUS, SearchRequest(text=TEXT, limit=3))
    assert first.end_cursor is not None
    second = await app.search.search(ANONYMOUS, SearchRequest(text=TEXT, limit=3, after=first.end_cursor))

    def explained(results: list) -> list[tuple]:
        return [(r.listing.id, r.score, r.parts) for r in results]

    assert explained(first.results + second.results) == explained(whole.results)
    assert second.interpretation == whole.interpretation and second.notes == whole.notes


async def more_varied(app: CatalogApp, owner: Actor) -> None:
    """Listings that share some of ``TEXT``'s words and not others, in two categories and formats: later
    pages then carry every kind of part (keyword, semantic, category, format, distinctive words)."""
    for i, (words, category, subcategory, output) in enumerate(
        (
            ("product reviews sentiment, multilingual", "Natural Language Processing", None, None),
            ("classify support tickets", "Natural Language Processing", "Text Classification", "tokens"),
            ("reviews of products: star rating regression", "Natural Language Processing", None, "vector"),
            ("image sentiment of product photos", "Computer Vision", "Image Classification", None),
            ("classify the topic of news articles", "Natural Language Processing", None, None),
        )
    ):
        overrides = {"description": f"Models that {words}.", "accuracy": 0.5 + 0.07 * i, "category": category}
        if subcategory:
            overrides["subcategory"] = subcategory
        if output:
            overrides["output_format"] = output
        if category == "Computer Vision":
            overrides["input_format"] = "image"
        await app.listings.create(owner, listing_data(f"varied-{i}", **overrides))


@pytest.mark.parametrize("sort", ["relevance", "usage", "accuracy", "latency", "newest"])
async def test_later_pages_read_in_another_process_explain_exactly_as_one_eager_page(
    app: CatalogApp, other_process: CatalogApp, alice: Actor, sort: str
) -> None:
    """The snapshot keeps the candidates unexplained (packed columns, ``ranking.pending``), sorted by a
    field as by relevance; a later page, here read from the database by another process, explains its
    results exactly (same ids, scores, parts and sentences, the sort's part first) as a single page
    explaining every candidate at ranking time."""
    made = await fill(app, alice)
    await more_varied(app, alice)
    for count, listing_id in enumerate(made[:4]):  # usage that orders some candidates and ties others
        for _ in range(count + 1):
            await app.usage.record(listing_id, "inference", success=True, latency_ms=3)
    await other_process.index.sync()
    whole = SearchRequest(text=TEXT, sort=sort, limit=app.settings.max_page_size)
    eager = await app.search.search(ANONYMOUS, whole)
    assert not eager.has_next_page and len(eager.results) == 13
    request = SearchRequest(text=TEXT, sort=sort, limit=2)
    first = await app.search.search(ANONYMOUS, request)
    pages = await rest_of(other_process, ANONYMOUS, request, first)  # the snapshot is still queued in app
    await app.search.snapshots.flush()
    async with app.db.session() as session:
        row = await session.get(SearchSnapshot, (cursor_fields(first.end_cursor or "")["s"], 0))
        assert row is not None and is_packed(row.entries)  # no explained entry stored as JSON

    def explained(results: list) -> list[tuple]:
        return [(r.listing.id, r.score, r.parts) for r in results]

    paged = first.results + [result for page in pages for result in page.results]
    assert explained(paged) == explained(eager.results)
    later_parts = {part.name for page in pages for result in page.results for part in result.parts}
    assert {"keyword", "semantic", "category", "distinctive_words"} <= later_parts
    assert all(page.interpretation == eager.interpretation for page in pages)
    if sort != "relevance":
        assert all(result.parts[0].name == sort for result in paged)


async def test_a_snapshot_row_of_the_previous_format_is_still_paged(app: CatalogApp, alice: Actor) -> None:
    """Rows written before the packed format (zlib JSON, each later candidate with its ``reasons``) may
    still be stored at upgrade: they are read, and their pages are those the new format gives."""
    await fill(app, alice)
    await more_varied(app, alice)
    request = SearchRequest(text=TEXT, limit=3)
    first = await app.search.search(ANONYMOUS, request)
    assert first.end_cursor is not None
    await app.search.snapshots.flush()
    expected = await rest_of(app, ANONYMOUS, request, first)
    snapshot_id = cursor_fields(first.end_cursor)["s"]
    async with app.db.session() as session:
        row = await session.get(SearchSnapshot, (snapshot_id, 0))
        assert row is not None
        pending = unpack(row.entries)
        legacy = [
            [r.listing.id, r.score, [[p.name, p.value, p.detail] for p in r.parts]] for r in first.results
        ] + [[r.id, r.score, [], r.reasons] for r in pending.results(len(first.results), len(pending))]
        row.entries = zlib.compress(json.dumps(legacy).encode())
    paged = await rest_of(app, ANONYMOUS, request, first)
    assert [(p.ids, [r.parts for r in p.results]) for p in paged] == [
        (p.ids, [r.parts for r in p.results]) for p in expected
    ]
    assert len(expected) >= 3


@pytest.mark.parametrize("sort", ["newest", "usage"])
async def test_facet_only_pages_stay_put_while_listings_are_added_and_boosted(
    app: CatalogApp, alice: Actor, sort: str
) -> None:
    made = await fill(app, alice)
    request = SearchRequest(sort=sort, limit=3)
    expected = await every_id(app, ANONYMOUS, request)
    assert sorted(expected) == sorted(made)

    async def change() -> None:
        await app.listings.create(alice, listing_data("brand-new"))
        for _ in range(3):
            await app.usage.record(expected[-1], "inference", success=True)

    assert await paged_across(app, ANONYMOUS, request, change) == expected


async def test_facet_only_paging_past_its_first_chunk_neither_repeats_nor_skips(
    app: CatalogApp, alice: Actor
) -> None:
    """Past the snapshot's first chunk the next one is taken from the current order, minus what the
    snapshot holds: a listing boosted or published meanwhile comes once, every other one still comes."""
    app.search.settings = app.settings.model_copy(update={"search_snapshot_chunk": 4})
    made = await fill(app, alice)
    request = SearchRequest(sort="usage", limit=3)
    added: list[str] = []

    async def change() -> None:
        added.append((await app.listings.create(alice, listing_data("brand-new"))).id)
        for listing_id in made:  # reverse the usage order: the least used become the most used
            for _ in range(made.index(listing_id) + 1):
                await app.usage.record(listing_id, "inference", success=True)

    seen = await paged_across(app, ANONYMOUS, request, change)
    assert len(seen) == len(set(seen))
    assert set(made) <= set(seen) <= set(made) | set(added)
    async with app.db.session() as session:  # the snapshot grew by chunks as it was paged
        chunks = await session.scalar(select(func.count()).select_from(SearchSnapshot))
    assert chunks >= 2


async def test_listings_hidden_between_pages_are_dropped_and_nothing_else_moves(
    app: CatalogApp, alice: Actor, bob: Actor
) -> None:
    """One listing already shown and one still ahead are made private after the first page: the one
    ahead is dropped from its page, and neither shifts the listings ranked after them."""
    await fill(app, alice)
    request = SearchRequest(text=TEXT, limit=3)
    expected = await every_id(app, bob, request)
    shown, ahead = expected[1], expected[4]

    async def hide() -> None:
        for listing_id in (shown, ahead):
            await app.listings.update(alice, listing_id, {"visibility": "private"})

    assert await paged_across(app, bob, request, hide) == [i for i in expected if i != ahead]


async def test_only_a_search_with_a_next_page_keeps_a_snapshot(app: CatalogApp, alice: Actor) -> None:
    await fill(app, alice)
    single = await app.search.search(ANONYMOUS, SearchRequest(text=TEXT, limit=20))
    assert not single.has_next_page and single.end_cursor is None
    await app.search.search(ANONYMOUS, SearchRequest(text=TEXT, limit=2))
    await app.search.snapshots.flush()
    async with app.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(SearchSnapshot)) == 1


async def test_an_expired_cursor_is_refused_and_its_snapshot_purged(app: CatalogApp, alice: Actor) -> None:
    await fill(app, alice)
    request = SearchRequest(text=TEXT, limit=3)
    first = await app.search.search(ANONYMOUS, request)
    assert first.end_cursor is not None
    second = await app.search.search(ANONYMOUS, _after(request, first.end_cursor))
    assert second.results
    ttl = app.settings.search_snapshot_ttl_s
    app.search.snapshots.clock = lambda: utcnow() + timedelta(seconds=ttl + 1)
    with pytest.raises(CursorExpired, match="search again") as caught:
        await app.search.search(ANONYMOUS, _after(request, first.end_cursor))
    assert caught.value.code == "CURSOR_EXPIRED" and caught.value.details["field"] == "after"
    fresh = await app.search.search(ANONYMOUS, request)  # its write purges what expired (every minute)
    await app.search.snapshots.flush()
    async with app.db.session() as session:
        kept = (await session.scalars(select(SearchSnapshot.id))).all()
    assert fresh.end_cursor is not None and kept == [cursor_fields(fresh.end_cursor)["s"]]
    with pytest.raises(CursorExpired):  # gone from storage: the cursor's own age still says why
        await app.search.search(ANONYMOUS, _after(request, first.end_cursor))


async def test_another_accounts_or_an_altered_cursor_is_refused(
    app: CatalogApp, alice: Actor, bob: Actor
) -> None:
    await fill(app, alice)
    request = SearchRequest(text=TEXT, limit=3)
    first = await app.search.search(bob, request)
    assert first.end_cursor is not None
    carol = await make_actor(app, "carol", "requester")
    for stranger in (carol, ANONYMOUS, alice):
        with pytest.raises(BadInput, match="not a cursor this service issued to you"):
            await app.search.search(stranger, _after(request, first.end_cursor))
    fields = cursor_fields(first.end_cursor)
    fields["p"] = 6  # skip a page the search never handed out
    altered = CURSOR_PREFIX + base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
    with pytest.raises(BadInput, match="not a cursor this service issued to you"):
        await app.search.search(bob, _after(request, altered))
    with pytest.raises(BadInput, match="different search"):
        await app.search.search(bob, SearchRequest(text="translate", limit=3, after=first.end_cursor))
    page = await app.search.search(bob, _after(request, first.end_cursor))  # the owner pages on
    assert page.results and not set(page.ids) & set(first.ids)


@pytest.fixture
async def other_process(settings: Settings, encoder: Encoder, tmp_path: Path) -> AsyncIterator[CatalogApp]:
    """A second API process: its own index directory, the same database."""
    other = settings.model_copy(update={"data_dir": tmp_path / "other", "search_snapshot_batch_s": 0.3})
    app = await CatalogApp.open(other, encoder=encoder)
    yield app
    await app.close()


async def test_another_process_serves_the_next_pages(
    app: CatalogApp, other_process: CatalogApp, alice: Actor
) -> None:
    """The first page's snapshot is still queued in the process that made it when the second page
    reaches the other process: that one waits for the batch instead of calling the cursor unknown."""
    await fill(app, alice)
    await other_process.index.sync()
    request = SearchRequest(text=TEXT, limit=3)
    expected = await every_id(other_process, alice, request)
    first = await other_process.search.search(alice, request)
    assert first.end_cursor is not None
    await app.listings.create(alice, listing_data("meanwhile", description=f"{TEXT}.", accuracy=0.99))
    second = await app.search.search(alice, _after(request, first.end_cursor))
    assert second.end_cursor is not None
    third = await other_process.search.search(alice, _after(request, second.end_cursor))
    rest = await rest_of(app, alice, request, third)
    assert first.ids + second.ids + third.ids + [i for page in rest for i in page.ids] == expected


@pytest.fixture
async def redis_processes(
    settings: Settings, encoder: Encoder, tmp_path: Path, redis_url: str
) -> AsyncIterator[tuple[CatalogApp, CatalogApp]]:
    """Two API processes on one database that keep their snapshots in Redis."""
    apps = []
    for name in ("one", "two"):
        update = {"data_dir": tmp_path / name, "redis_url": redis_url, "search_snapshot_batch_s": 0.3}
        apps.append(await CatalogApp.open(settings.model_copy(update=update), encoder=encoder))
    yield apps[0], apps[1]
    for app in apps:
        await app.close()


async def test_with_redis_snapshots_live_there_serve_every_process_and_expire(
    redis_processes: tuple[CatalogApp, CatalogApp], redis_url: str
) -> None:
    from redis.asyncio import Redis

    one, two = redis_processes
    alice = await make_actor(one, "alice")
    await fill(one, alice)
    await two.index.sync()
    request = SearchRequest(text=TEXT, limit=3)
    expected = await every_id(two, alice, request)
    first = await two.search.search(alice, request)  # its snapshot is still queued in ``two``
    assert first.end_cursor is not None
    await one.listings.create(alice, listing_data("meanwhile", description=f"{TEXT}.", accuracy=0.99))
    rest = await rest_of(one, alice, request, first)
    assert first.ids + [i for page in rest for i in page.ids] == expected

    key = f"mlrepo:search-snapshot:{cursor_fields(first.end_cursor)['s']}"
    client = Redis.from_url(redis_url)
    try:
        ttl_ms = await client.pttl(key)
        assert 0 < ttl_ms <= one.settings.search_snapshot_ttl_s * 1000  # Redis expires it by itself
    finally:
        await client.aclose()
    async with one.db.session() as session:  # nothing of it in the database
        assert await session.scalar(select(func.count()).select_from(SearchSnapshot)) == 0
    with pytest.raises(BadInput, match="issued to you"):
        await one.search.search(ANONYMOUS, _after(request, first.end_cursor))
    one.search.snapshots.clock = lambda: utcnow() + timedelta(seconds=one.settings.search_snapshot_ttl_s + 1)
    with pytest.raises(CursorExpired):
        await one.search.search(alice, _after(request, first.end_cursor))
