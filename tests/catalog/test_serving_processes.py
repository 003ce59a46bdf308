"""Several API processes serving one catalog (one database, one data directory), as a deployment scales
``mlrepo serve`` out: each holds a search index of its own and sees the others' writes by sync."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from catalog_helpers import listing_data

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.search_service import SearchRequest
from infra.settings import Settings
from search.embeddings import Encoder


@pytest.fixture
async def other_server(settings: Settings, encoder: Encoder) -> AsyncIterator[CatalogApp]:
    """A second serving process on the same data directory (uploads, artifacts) with its own index."""
    own_index = settings.model_copy(update={"search_index_dir": settings.data_dir / "index-b"})
    app = await CatalogApp.open(own_index, encoder=encoder)
    yield app
    await app.close()


async def test_two_servers_share_a_data_dir_each_with_its_own_index(
    catalog_app: CatalogApp, other_server: CatalogApp, alice: Actor, bob: Actor
) -> None:
    created = await catalog_app.listings.create(alice, listing_data("okapi-sentiment-model"))
    await other_server.index.sync(force=True)
    response = await other_server.search.search(bob, SearchRequest(text="okapi sentiment", limit=5))
    assert created.id in {result.listing.id for result in response.results}
    assert other_server.settings.index_dir != catalog_app.settings.index_dir
