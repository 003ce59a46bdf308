"""Catalog fixtures: a real ``CatalogApp`` (database, embedded index, MiniLM encoder) per test.

The encoder is loaded once per session and shared: loading MiniLM costs ~1-2 s, encoding is what the tests
exercise. Every test gets its own migrated database (SQLite and PostgreSQL) and its own index directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from catalog_helpers import make_actor

from catalog.actors import Actor
from catalog.app import CatalogApp
from infra.settings import Settings
from search.embeddings import Encoder


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture
async def app(settings: Settings, encoder: Encoder) -> AsyncIterator[CatalogApp]:
    catalog = await CatalogApp.open(settings, encoder=encoder)
    try:
        yield catalog
    finally:
        await catalog.close()


@pytest.fixture
async def alice(app: CatalogApp) -> Actor:
    return await make_actor(app, "alice", "producer")


@pytest.fixture
async def bob(app: CatalogApp) -> Actor:
    return await make_actor(app, "bob", "requester")


@pytest.fixture
async def admin(app: CatalogApp) -> Actor:
    return await make_actor(app, "root", "admin")
