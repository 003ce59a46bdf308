"""A page of listings reads each relation (reviews, rating, version history) for the whole page at once
(``api.loaders``): a fixed number of SQL statements whatever the page size, the same values a listing's
own read gives, and the same visibility rule."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from api_helpers import LISTING_FIELDS
from sqlalchemy import Engine, event

from api.loaders import ListingLoaders
from catalog.actors import ANONYMOUS, Actor
from infra.errors import NotFound

LISTINGS = f"query($first: Int!) {{ listings(first: $first) {{ edges {{ node {{ {LISTING_FIELDS} }} }} }} }}"
SEARCH = (
    'query($limit: Int!) { search(input: {text: "sentiment of reviews", limit: $limit}) '
    f"{{ results {{ listing {{ {LISTING_FIELDS} }} }} }} }}"
)
PAGE_SIZES = (3, 12)


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL every engine of this process sends meanwhile (the SQLite reader engine's too)."""
    sent: list[str] = []

    def record(_connection, _cursor, statement, *_args) -> None:
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def actor(api, name: str, role: str) -> tuple[Actor, str]:
    token = await api.account(name, role)
    return await api.services.catalog.accounts.authenticate(token), token


async def reviewed_listings(api, count: int) -> tuple[Actor, list[str]]:
    """``count`` public listings, each with two reviews and a second version; returns the owner."""
    catalog = api.services.catalog
    owner, _ = await actor(api, "pat", "producer")
    reviewers = [(await actor(api, name, "requester"))[0] for name in ("rita", "remy")]
    ids = []
    for i in range(count):
        view = await catalog.listings.create(
            owner,
            {"name": f"sentiment {i}", "kind": "model", "category": "Natural Language Processing",
             "description": f"Classifies the sentiment of reviews, variant {i}."},
        )  # fmt: skip
        await catalog.listings.update(owner, view.id, {"license": "MIT", "version": "1.1.0"})
        for j, reviewer in enumerate(reviewers):
            await catalog.reviews.add(reviewer, view.id, 1 + (i + j) % 5, f"review {j} of {i}")
        ids.append(view.id)
    return owner, ids


def relation_reads(sent: list[str]) -> list[str]:
    return [s for s in sent if "reviews" in s or "listing_versions" in s]


async def test_a_page_reads_its_relations_in_statements_that_do_not_grow_with_it(api) -> None:
    """Each listing of a page read its reviews, rating and versions alone: ~7 statements a listing
    (702 for a page of 100, 0.7 s on a small catalog). Now a page of 12 sends what a page of 3 sends."""
    await reviewed_listings(api, max(PAGE_SIZES))
    counts: dict[str, dict[int, int]] = {"listings": {}, "search": {}}
    for size in PAGE_SIZES:
        with statements() as sent:
            page = await api.data(LISTINGS, {"first": size})
        nodes = [edge["node"] for edge in page["listings"]["edges"]]
        assert len(nodes) == size and all(len(n["reviews"]) == 2 and len(n["versions"]) == 2 for n in nodes)
        counts["listings"][size] = len(sent)
        with statements() as sent:
            found = await api.data(SEARCH, {"limit": size})
        assert len(found["search"]["results"]) == size
        # Only the relations' reads: the search's own logging is batched and may land in either request.
        counts["search"][size] = len(relation_reads(sent))
    small, large = PAGE_SIZES
    assert counts["listings"][large] == counts["listings"][small], counts
    assert counts["search"][large] == counts["search"][small], counts
    assert counts["search"][large] <= 3 * 2, counts  # one visibility and one read per relation at most


async def test_a_page_shows_what_each_listing_shows_alone(api) -> None:
    """The page's windows of reviews (numbered per listing) and ratings equal each listing's own read."""
    _, ids = await reviewed_listings(api, 4)
    fields = (
        "id a: reviews(first: 1) { text } b: reviews(first: 2, offset: 1) { text } rating { average count }"
    )
    page = await api.data(f"{{ listings(first: 4) {{ edges {{ node {{ {fields} }} }} }} }}")
    for edge in page["listings"]["edges"]:
        alone = await api.data(f'{{ listing(id: "{edge["node"]["id"]}") {{ {fields} }} }}')
        assert edge["node"] == alone["listing"]
        assert len(alone["listing"]["a"]) == 1 and len(alone["listing"]["b"]) == 1
        assert alone["listing"]["rating"]["count"] == 2
    assert {edge["node"]["id"] for edge in page["listings"]["edges"]} == set(ids)


async def test_a_batch_answers_each_listing_under_the_callers_visibility(api) -> None:
    """A listing the caller may not see gets the NOT_FOUND of its own read, in a batch with visible ones;
    the visible ones get theirs."""
    owner, ids = await reviewed_listings(api, 1)
    private = await api.services.catalog.listings.create(
        owner, {"name": "private one", "kind": "model", "category": "Vision", "visibility": "private"}
    )
    for loaders_of in (ANONYMOUS, (await actor(api, "bob", "requester"))[0]):
        loaders = ListingLoaders.of(api.services.catalog, loaders_of)
        shown, hidden = await asyncio.gather(
            loaders.versions.load(ids[0]), loaders.versions.load(private.id), return_exceptions=True
        )
        assert [v.version for v in shown] == ["1.0.0", "1.1.0"] and isinstance(hidden, NotFound)
        reviews, rating, refused = await asyncio.gather(
            loaders.review_page(ids[0], 5, 0), loaders.rating.load(ids[0]),
            loaders.rating.load(private.id), return_exceptions=True,
        )  # fmt: skip
        assert len(reviews) == 2 and rating.count == 2 and isinstance(refused, NotFound)
        with pytest.raises(NotFound, match="no listing with id"):
            await loaders.review_page(private.id, 5, 0)
    mine = ListingLoaders.of(api.services.catalog, owner)
    assert [v.version for v in await mine.versions.load(private.id)] == ["1.0.0"]
